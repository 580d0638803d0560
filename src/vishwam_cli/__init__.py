"""vishwam_cli: the Typer face of vishwam. Each command parses options, calls one core function and
renders its result; no modelling logic lives here."""
