"""Hydra configs of reenact (composed as pkg://reenact.conf): one folder per config group."""
