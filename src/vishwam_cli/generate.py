"""`vishwam generate`: stream a completion (or a chat reply) from a model directory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from vishwam_cli.options import Json, Quiet
from vishwam_cli.output import Output


def generate(
    checkpoint: Annotated[
        Path,
        typer.Argument(help="A model directory (from `vishwam convert model` or any HF Llama-family dir)."),
    ],
    prompt: Annotated[str | None, typer.Option(help="Plain-text prompt (no chat template).")] = None,
    chat: Annotated[
        str | None, typer.Option(help="A user message, rendered through the model's chat template.")
    ] = None,
    system: Annotated[
        str | None, typer.Option(help="System message for --chat (default: the template's).")
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Most new tokens to generate.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass, in (0, 1].")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sample among the k most likely (0 = off).")] = 0,
    min_p: Annotated[float, typer.Option(help="Drop tokens below min_p x the top probability.")] = 0.0,
    repetition_penalty: Annotated[float, typer.Option(help="> 1 discourages repeating tokens.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed: the same seed gives the same output.")] = 0,
    stop: Annotated[
        list[str] | None, typer.Option(help="Stop string (repeatable); the output ends before it.")
    ] = None,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Generate text. Reads the prompt from stdin when neither --prompt nor --chat is given."""
    if prompt is not None and chat is not None:
        raise typer.BadParameter("give --prompt or --chat, not both.")
    if prompt is None and chat is None:
        if sys.stdin.isatty():
            raise typer.BadParameter("give --prompt TEXT, --chat TEXT, or pipe the prompt on stdin.")
        prompt = sys.stdin.read()

    from vishwam_core.chat import generate_text, render_prompt
    from vishwam_core.checkpoint import load_model, load_tokenizer
    from vishwam_core.generate import Engine, SamplingParams

    out = Output(json_, quiet)
    params = SamplingParams(
        max_new_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        seed=seed,
    )
    out.log(f"Loading {checkpoint}")
    tokenizer = load_tokenizer(checkpoint)
    engine = Engine(load_model(checkpoint))
    ids = render_prompt(tokenizer, prompt=prompt, chat=chat, system=system)
    streaming = not (json_ or quiet)

    def on_text(_row: int, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    [completion], result = generate_text(
        engine, tokenizer, [ids], params, stop_strings=stop or (), on_text=on_text if streaming else None
    )
    if streaming:
        sys.stdout.write("\n")
        out.log(
            f"[{result.prefill_tokens} prompt tokens at {result.prefill_tokens_per_s:.0f} tok/s, "
            f"{len(completion.tokens)} new at {result.decode_tokens_per_s:.1f} tok/s, {completion.finish_reason}]"
        )
    out.result(
        {
            "text": completion.text,
            "finish_reason": completion.finish_reason,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": len(completion.tokens),
            "prefill_tokens_per_s": round(result.prefill_tokens_per_s, 2),
            "decode_tokens_per_s": round(result.decode_tokens_per_s, 2),
            "seed": seed,
        },
        render=lambda _: None,
    )
