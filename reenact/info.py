"""Print each network of a model preset with its parameter count: ``python -m reenact.info model=fomm_vox256``.

Users need the counts to size runs; they also prove parity with the original releases (see the tests).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hydra.utils import instantiate
from torch import nn

from reenact.utils.config_check import ConfigError, check_instantiable
from reenact.utils.hydra_utils import compose_config


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_table(overrides: Sequence[str]) -> list[tuple[str, str, int]]:
    """Rows (name, class, parameters): each network, its dense motion network, the discriminator and the total."""
    cfg = compose_config("train", overrides)
    check_instantiable(cfg.model, "model")
    network = instantiate(cfg.model.network)
    rows: list[tuple[str, str, int]] = []
    total = 0
    for name, child in network.named_children():
        count = count_parameters(child)
        total += count
        rows.append((name, type(child).__name__, count))
        for sub_name, sub in child.named_children():
            if "dense_motion" in sub_name:
                rows.append((f"{name}.{sub_name}", type(sub).__name__, count_parameters(sub)))
    if cfg.model.get("discriminator") is not None:
        discriminator = instantiate(cfg.model.discriminator)
        discriminator = discriminator() if not isinstance(discriminator, nn.Module) else discriminator
        count = count_parameters(discriminator)
        built = cfg.model.get("generator_gan", 0) > 0
        rows.append(("discriminator" + ("" if built else " (not built: generator_gan=0)"),
                     type(discriminator).__name__, count))
        if built:
            total += count
    rows.append(("total trained", "", total))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    try:
        rows = parameter_table(overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    preset = next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), "default")
    print(f"model={preset}")
    width = max(len(r[0]) for r in rows) + 2
    for name, cls, count in rows:
        print(f"  {name:<{width}} {cls:<28} {count:>14,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
