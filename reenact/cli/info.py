"""Print each network of a model preset with its parameter count: ``python -m reenact.info model=fomm_vox256``.

Users need the counts to size runs; they also prove parity with the original releases (see the tests).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hydra.utils import get_class, instantiate
from torch import nn

from reenact.cli import user_errors
from reenact.utils.config_check import ConfigError, check_instantiable
from reenact.utils.hydra_utils import compose_config
from reenact.utils.messages import one_line


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_table(overrides: Sequence[str]) -> list[tuple[str, str, int]]:
    """Rows (name, class, parameters): the networks the family reports, the discriminator and the total trained."""
    try:
        cfg = compose_config("train", overrides)
    except Exception as exc:  # Hydra's override and composition errors: one line, not its block
        raise ConfigError(one_line(exc, with_type=True)) from None
    check_instantiable(cfg.model, "model")
    network = instantiate(cfg.model.network)
    rows = [(name, type(module).__name__, count_parameters(module)) for name, module in network.parameter_report()]
    total = count_parameters(network)
    if cfg.model.get("discriminator") is not None:
        discriminator = instantiate(cfg.model.discriminator)
        discriminator = discriminator() if not isinstance(discriminator, nn.Module) else discriminator
        count = count_parameters(discriminator)
        # built only when a loss term trains against it (the objective's terms say so without building VGG)
        terms = cfg.model.get("objective", {}).get("terms") or {}
        built = any(term is not None and get_class(term._target_).uses_discriminator for term in terms.values())
        rows.append(("discriminator" + ("" if built else " (not built: no adversarial loss term)"),
                     type(discriminator).__name__, count))
        if built:
            total += count
    rows.append(("total trained", "", total))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(overrides):
        print(__doc__.strip())
        return 0
    with user_errors(exit=False) as reported:
        rows = parameter_table(overrides)
    if reported.status:
        return reported.status
    preset = next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), "default")
    print(f"model={preset}")
    width = max(len(r[0]) for r in rows) + 2
    for name, cls, count in rows:
        print(f"  {name:<{width}} {cls:<28} {count:>14,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
