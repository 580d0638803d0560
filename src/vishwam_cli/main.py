"""The `vishwam` command: registers the subcommands, nothing else."""

from __future__ import annotations

from typing import Annotated

import typer

from vishwam_cli import analyze, convert, evaluate, generate, pretrain, tot

app = typer.Typer(
    name="vishwam",
    help="A JAX-native toolkit for the whole life of a language model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(convert.app, name="convert")
app.command("analyze")(analyze.analyze)
app.command("generate")(generate.generate)
app.command("pretrain")(pretrain.pretrain)
app.command("eval")(evaluate.eval_cmd)
app.add_typer(tot.app, name="tot")


def _version(value: bool) -> None:
    if value:
        from vishwam_core import __version__

        print(f"vishwam {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """A JAX-native toolkit for the whole life of a language model."""


def main() -> None:
    from vishwam_cli.errors import fail

    try:
        app()
    except KeyboardInterrupt:
        import sys

        print("Interrupted.", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # every failure leaves as one sentence (fail re-raises under VISHWAM_DEBUG)
        fail(exc)


if __name__ == "__main__":
    main()
