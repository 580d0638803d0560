"""`vishwam analyze TARGET`: architecture, exact parameters, FLOPs, memory, planning; --compare,
--recommend and --bench. Parses options, calls one function of `vishwam_core.analysis`, renders it."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from vishwam_cli.options import Json, Quiet
from vishwam_cli.output import Output

KV_DTYPES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32", "int8": "int8"}


def analyze(
    target: Annotated[
        str | None,
        typer.Argument(help="A preset name (e.g. llama-2-7b), a model directory or a config.json."),
    ] = None,
    seq_len: Annotated[
        int | None,
        typer.Option(help="Context for FLOPs, activations and KV cache (default: min(max_seq_len, 4096))."),
    ] = None,
    batch: Annotated[
        int, typer.Option(help="Sequences per step for the activation and KV cache memory.")
    ] = 1,
    kv_dtype: Annotated[str, typer.Option(help="KV cache dtype: bf16 | f16 | f32 | int8.")] = "bf16",
    lora_rank: Annotated[int, typer.Option(help="LoRA / QLoRA rank.")] = 16,
    lora_targets: Annotated[
        str, typer.Option(help="LoRA target modules: all-linear or e.g. q_proj,v_proj.")
    ] = "all-linear",
    tokens: Annotated[
        float | None, typer.Option(help="Training tokens to plan for (default: 20 per parameter).")
    ] = None,
    mfu: Annotated[float, typer.Option(help="Assumed model FLOPs utilisation for the planning table.")] = 0.4,
    accelerator: Annotated[
        str | None,
        typer.Option(
            help="Plan for one accelerator: tpu-v4, tpu-v5e, tpu-v5p, tpu-v6e, a100, h100, h200, cpu."
        ),
    ] = None,
    chips: Annotated[
        int | None, typer.Option(help="Chips to plan with (default: the fewest that fit).")
    ] = None,
    price: Annotated[
        float | None, typer.Option(help="USD per chip-hour, to turn chip-hours into cost.")
    ] = None,
    cpu_peak: Annotated[
        float | None,
        typer.Option(help="CPU peak FLOP/s instead of the measured one (also $VISHWAM_CPU_PEAK_FLOPS)."),
    ] = None,
    compare: Annotated[
        str | None, typer.Option(help="Comma-separated targets for a side-by-side table.")
    ] = None,
    recommend: Annotated[
        bool, typer.Option("--recommend", help="Propose a configuration for --params or --flops.")
    ] = False,
    params: Annotated[
        float | None, typer.Option(help="Target parameter count for --recommend, e.g. 7e9.")
    ] = None,
    flops: Annotated[
        float | None, typer.Option(help="Training FLOP budget for --recommend (compute-optimal size).")
    ] = None,
    vocab: Annotated[int, typer.Option(help="Vocabulary size for --recommend.")] = 32000,
    head_dim: Annotated[int, typer.Option(help="Head dimension for --recommend.")] = 128,
    bench: Annotated[
        bool, typer.Option("--bench", help="Measure prefill/decode tokens/s, MFU and peak memory here.")
    ] = False,
    bench_batch: Annotated[int, typer.Option(help="--bench: the batch N decode and prefill run at.")] = 4,
    prompt_len: Annotated[int, typer.Option(help="--bench: prompt tokens.")] = 64,
    new_tokens: Annotated[int, typer.Option(help="--bench: decode steps timed.")] = 16,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Analyse a model: architecture, exact parameters, FLOPs per token, memory, training plan."""
    from vishwam_core import analysis

    output = Output(json_, quiet)
    if kv_dtype not in KV_DTYPES:
        raise typer.BadParameter(
            f"'{kv_dtype}' is not one of {', '.join(KV_DTYPES)}.", param_hint="--kv-dtype"
        )
    options: dict[str, Any] = dict(
        seq_len=seq_len,
        batch=batch,
        kv_dtype=KV_DTYPES[kv_dtype],
        lora_rank=lora_rank,
        lora_targets=lora_targets,
        tokens=tokens,
        mfu=mfu,
        chips=chips,
        price_per_chip_hour=price,
        cpu_peak=cpu_peak,
        accelerator=accelerator,
    )
    if recommend:
        if target or compare or bench:
            raise typer.BadParameter("--recommend takes no TARGET, --compare or --bench.")
        if (params is None) == (flops is None):
            raise typer.BadParameter("--recommend needs exactly one of --params N or --flops BUDGET.")
        output.result(
            analysis.recommend(params=params, flops=flops, vocab_size=vocab, head_dim=head_dim),
            render_recommend,
        )
        return
    if params is not None or flops is not None:
        raise typer.BadParameter("--params and --flops go with --recommend.")
    if compare:
        names = [*([target] if target else []), *(c.strip() for c in compare.split(",") if c.strip())]
        if bench:
            raise typer.BadParameter("--bench measures one TARGET; drop --compare.")
        output.log(f"Comparing {', '.join(names)}")
        output.result(analysis.compare(names, **options), render_compare)
        return
    if not target:
        raise typer.BadParameter(
            "give a TARGET (preset, model directory or config.json), --compare or --recommend."
        )
    resolved = analysis.resolve_target(target)
    report = analysis.analyze(resolved, **options)
    if bench:
        output.log(
            f"Benchmarking {resolved.name}: prefill {bench_batch}x{prompt_len}, decode {new_tokens} tokens "
            f"at batch 1 and {bench_batch}"
        )
        report["bench"] = analysis.bench(
            resolved,
            batch=bench_batch,
            prompt_len=prompt_len,
            new_tokens=new_tokens,
            cpu_peak=cpu_peak,
        )
    output.result(report, render_report)


# ---- formatting -------------------------------------------------------------------------------------
def count(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:g}"


def exact(n: int) -> str:
    return f"{n:,} ({count(n)})" if n >= 1000 else f"{n:,}"


def size(b: float | None) -> str:
    if b is None:
        return "-"
    for unit, s in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if b >= s:
            return f"{b / s:.3g} {unit}"
    return f"{b:g} B"


def sci(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 1e7:
        return f"{x:.3g}"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _kv_table(title: str, rows: list[tuple[str, str]]):
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left", title_style="bold")
    table.add_column(style="cyan", no_wrap=True)
    table.add_column()
    for k, v in rows:
        table.add_row(k, v)
    return table


def _positions(p: dict) -> str:
    if p["kind"] != "rope":
        return p["kind"]
    s = f"RoPE theta={p['theta']:g}"
    if p.get("scaling"):
        s += f", {p['scaling']} scaling x{p['factor']:g}"
    return s


def render_report(r: dict) -> None:
    from rich.table import Table

    from vishwam_cli.console import stdout_console

    con = stdout_console()
    t = r["target"]
    a = r["architecture"]
    tok, att, blk, emb = a["tokenizer"], a["attention"], a["block"], a["embeddings"]
    con.print(f"[bold]{t['name']}[/bold] ({t['kind']}{': ' + t['path'] if t['path'] else ''})")
    if tok["kind"]:
        tok_line = (
            f"{tok['kind']}, vocab {tok['vocab_size']:,}, {tok['special_tokens']} special tokens"
            f" (bos {tok['bos_token']!r}, eos {tok['eos_token']!r}), pre-tokenizer {tok['pre_tokenizer']}"
            f"{', chat template' if tok['chat_template'] else ''}"
        )
    else:
        tok_line = f"vocab {tok['vocab_size']:,} ({tok['source']})"
    con.print(
        _kv_table(
            "Architecture",
            [
                ("family", a["model_type"]),
                ("tokenizer", tok_line),
                (
                    "embeddings",
                    f"{emb['vocab_size']:,} x {emb['d_model']}, {'tied' if emb['tied'] else 'untied'} head",
                ),
                (
                    "attention",
                    f"{att['kind']}: {att['n_heads']} heads, {att['n_kv_heads']} kv heads "
                    f"({att['queries_per_kv_head']} per kv), head_dim {att['head_dim']}"
                    f"{', qkv bias' if att['qkv_bias'] else ''}",
                ),
                ("positions", _positions(att["positions"])),
                ("window", f"sliding {att['sliding_window']:,}" if att["sliding_window"] else "full causal"),
                (
                    "block",
                    f"{blk['norm']}, {blk['mlp']} ffn {blk['ffn_dim']:,} ({blk['ffn_ratio']:.3g} x d_model)",
                ),
                (
                    "depth",
                    f"{a['n_layers']} layers, d_model {emb['d_model']:,} ({a['d_model_per_layer']:g} per layer)",
                ),
                ("context", f"{a['max_seq_len']:,} tokens"),
            ],
        )
    )
    p = r["params"]
    prow = [
        ("total", exact(p["total"])),
        ("embedding", exact(p["embedding"])),
        ("lm_head", exact(p["lm_head"]) if p["lm_head"] else "0 (tied to the embedding)"),
        ("non-embedding", exact(p["non_embedding"])),
        (
            "per block",
            f"{exact(p['per_block'])} = attention {p['attention_per_block']:,} + mlp "
            f"{p['mlp_per_block']:,} + norms {p['norms_per_block']:,}",
        ),
    ]
    if t.get("files"):
        f = t["files"]
        prow.append(
            (
                "in the files",
                f"{f['params']:,} ({', '.join(f['dtypes'])}, {size(f['weights_bytes'])} on disk)",
            )
        )
    con.print(_kv_table("Parameters (exact)", prow))
    fl = r["flops_per_token"]
    con.print(
        _kv_table(
            f"Compute per token at seq_len {fl['seq_len']:,}",
            [
                (
                    "forward",
                    f"{sci(fl['forward'])} FLOPs (dense {sci(fl['dense_forward'])} + attention {sci(fl['attention_forward'])})",
                ),
                (
                    "train",
                    f"{sci(fl['train'])} FLOPs = 6N {sci(fl['six_n'])} + attention {sci(fl['attention_train'])}",
                ),
            ],
        )
    )
    inf = r["memory"]["inference"]
    kv = inf["kv_cache"]
    w = inf["weights_bytes"]
    con.print(
        _kv_table(
            "Inference memory",
            [
                (
                    "weights",
                    f"f32 {size(w['float32'])}, bf16 {size(w['bfloat16'])}, int8 {size(w['int8'])}, "
                    f"int4 {size(w['int4'])} (scales not counted)",
                ),
                (
                    f"KV cache {kv['dtype']}",
                    f"{size(kv['bytes_per_token'])} per token; "
                    f"{size(kv['bytes'])} at batch {kv['batch']} x {kv['seq_len']:,}",
                ),
            ],
        )
    )
    tr = r["memory"]["training"]
    precisions = tr["by_precision"]
    table = Table(
        title=f"Training memory, AdamW, batch {tr['batch']} x {tr['seq_len']:,} (activations: estimates)",
        title_justify="left",
        title_style="bold",
    )
    table.add_column("", style="cyan")
    for name in precisions:
        table.add_column(name, justify="right")
    for label, get in (
        ("weights", lambda m: m["weights_bytes"]),
        ("gradients", lambda m: m["grads_bytes"]),
        ("AdamW moments", lambda m: m["optimizer_bytes"]),
        ("activations", lambda m: m["activations_bytes"]["none"]),
        ("activations, full remat", lambda m: m["activations_bytes"]["full"]),
        ("total", lambda m: m["total_bytes"]["none"]),
        ("total, full remat", lambda m: m["total_bytes"]["full"]),
    ):
        table.add_row(label, *(size(get(m)) for m in precisions.values()))
    con.print(table)
    for name, m in precisions.items():
        con.print(f"  {name}: {m['about']}")
    lo = r["memory"]["lora"]
    table = Table(
        title=f"LoRA rank {lo['rank']}: {exact(lo['trainable_params'])} trainable "
        f"({100 * lo['trainable_fraction']:.3g}%) on {','.join(lo['targets'])}",
        title_justify="left",
        title_style="bold",
    )
    table.add_column("", style="cyan")
    table.add_column("LoRA (bf16 base)", justify="right")
    table.add_column("QLoRA (NF4 base)", justify="right")
    for label, get in (
        ("frozen base weights", lambda m: m["base_weights_bytes"]),
        ("adapters + grads + AdamW", lambda m: m["adapter_states_bytes"]),
        ("activations, full remat", lambda m: m["activations_bytes"]["full"]),
        ("total, full remat", lambda m: m["total_bytes"]["full"]),
        ("total, no remat", lambda m: m["total_bytes"]["none"]),
    ):
        table.add_row(label, size(get(lo["lora"])), size(get(lo["qlora"])))
    con.print(table)
    render_plan(r["planning"])
    if "bench" in r:
        render_bench(r["bench"])


def render_plan(pl: dict) -> None:
    from rich.table import Table

    from vishwam_cli.console import stdout_console

    con = stdout_console()
    if pl["tokens"] == pl["chinchilla_tokens"]:
        why = pl["chinchilla_rule"]
    else:
        why = f"given; {pl['chinchilla_rule']} would give {count(pl['chinchilla_tokens'])}"
    con.print(
        f"[bold]Planning[/bold]: {count(pl['tokens'])} tokens ({why}), {sci(pl['train_flops'])} training FLOPs "
        f"at seq_len {pl['seq_len']:,}, assumed MFU {pl['mfu']:g}"
    )
    table = Table()
    given = pl["accelerators"] and pl["accelerators"][0]["chips"] != pl["accelerators"][0]["chips_to_fit"]
    cols = ["chip", "peak FLOP/s", "memory", "chips to fit", "chip-hours"]
    cols += ["chips", "days"] if given else ["days on those"]
    if pl["price_per_chip_hour"] is not None:
        cols.append("USD")
    for c in cols:
        table.add_column(c, justify="left" if c == "chip" else "right")
    for a in pl["accelerators"]:
        row = [
            a["name"],
            sci(a["peak_flops"]),
            a["memory"],
            str(a["chips_to_fit"]) if a["chips_to_fit"] else "no fit",
            _num(a["chip_hours"]),
            *([str(a["chips"]) if a["chips"] else "-"] if given else []),
            _num(a["days"]),
        ]
        if pl["price_per_chip_hour"] is not None:
            row.append(_num(a["cost_usd"]))
        table.add_row(*row)
    con.print(table)
    cpu = [a for a in pl["accelerators"] if a["key"] == "cpu"]
    peaks = "bf16 dense from published specs" if len(cpu) < len(pl["accelerators"]) else ""
    if cpu:
        peaks += ("; " if peaks else "") + f"CPU {cpu[0]['source']}"
    con.print(f"Peaks: {peaks}. Fit: {pl['fit_assumes']}.")


def render_bench(b: dict) -> None:
    from vishwam_cli.console import stdout_console

    pf = b["prefill"]
    rows = [
        (
            "device",
            f"{b['device']['platform']} ({b['device']['kind']}), {b['weights']} weights, "
            f"{b['param_dtype']} params, {b['compute_dtype']} compute",
        ),
        (
            "prefill",
            f"{pf['tokens_per_s']:,.0f} tokens/s at {pf['batch']} x {pf['prompt_len']} ({1000 * pf['seconds']:.1f} ms)",
        ),
        (
            "forward MFU",
            (f"{pf['mfu']:.3f}" if pf["mfu"] is not None else "-")
            + f" ({sci(pf['achieved_flops'])} of {sci(pf['peak_flops'])} FLOP/s: {pf['peak_source']})",
        ),
    ]
    for d in b["decode"]:
        rows.append(
            (
                f"decode batch {d['batch']}",
                f"{d['tokens_per_s']:,.1f} tokens/s ({d['ms_per_step']:.2f} ms/step)",
            )
        )
    rows.append(("peak memory", f"{size(b['peak_memory_bytes'])} ({b['peak_memory_source']})"))
    rows.append(
        (
            "predicted",
            f"weights {size(b['predicted_bytes']['weights'])}, "
            f"KV cache {size(b['predicted_bytes']['kv_cache'])}",
        )
    )
    stdout_console().print(_kv_table("Bench (measured here)", rows))


def render_compare(c: dict) -> None:
    from rich.table import Table

    from vishwam_cli.console import stdout_console

    reports = c["compare"]
    table = Table(title="Side by side", title_justify="left", title_style="bold")
    table.add_column("", style="cyan")
    for r in reports:
        table.add_column(r["target"]["name"], justify="right")

    def row(label: str, fn) -> None:
        table.add_row(label, *(fn(r) for r in reports))

    row("params", lambda r: f"{r['params']['total']:,}")
    row("non-embedding", lambda r: f"{r['params']['non_embedding']:,}")
    row("layers x d_model", lambda r: f"{r['config']['n_layers']} x {r['config']['d_model']}")
    row(
        "heads / kv heads",
        lambda r: (
            f"{r['config']['n_heads']} / {r['config']['n_kv_heads']} "
            f"({r['architecture']['attention']['kind']})"
        ),
    )
    row("ffn", lambda r: f"{r['config']['ffn_dim']:,}")
    row("vocab", lambda r: f"{r['config']['vocab_size']:,}")
    row("seq_len", lambda r: f"{r['flops_per_token']['seq_len']:,}")
    row("train FLOPs/token", lambda r: sci(r["flops_per_token"]["train"]))
    row("KV cache/token", lambda r: f"{size(r['kv_cache_bytes_per_token'])} ({r['kv_cache_dtype']})")
    row("KV cache at seq_len", lambda r: size(r["memory"]["inference"]["kv_cache"]["bytes"]))
    row("weights bf16", lambda r: size(r["memory"]["inference"]["weights_bytes"]["bfloat16"]))
    row("weights int4", lambda r: size(r["memory"]["inference"]["weights_bytes"]["int4"]))
    row(
        "train state (mixed)",
        lambda r: size(r["memory"]["training"]["by_precision"]["mixed"]["states_bytes"]),
    )
    row("Chinchilla tokens", lambda r: count(r["planning"]["chinchilla_tokens"]))
    row("train FLOPs", lambda r: sci(r["planning"]["train_flops"]))
    first = reports[0]["planning"]["accelerators"]
    for i, a in enumerate(first):
        row(
            f"{a['name']}: chips / chip-hours",
            lambda r, i=i: (
                f"{r['planning']['accelerators'][i]['chips_to_fit'] or '-'} / "
                f"{r['planning']['accelerators'][i]['chip_hours']:,.0f}"
            ),
        )
    con = stdout_console()
    con.print(table)
    pl = reports[0]["planning"]
    con.print(f"Tokens: {pl['chinchilla_rule']} unless --tokens; MFU {pl['mfu']:g}; {pl['fit_assumes']}.")


def render_recommend(rec: dict) -> None:
    from vishwam_cli.console import stdout_console

    c = rec["config"]
    p = rec["params"]
    goal = rec["goal"]
    aim = f"{count(goal['params_target'])} parameters" + (
        f" (compute-optimal for {sci(goal['flops'])} FLOPs)" if goal["flops"] else ""
    )
    rows = [
        ("d_model", f"{c['d_model']:,}"),
        ("n_layers", f"{c['n_layers']} (d_model / n_layers = {rec['aspect_ratio']:.0f})"),
        ("heads", f"{c['n_heads']} x head_dim {c['head_dim']}"),
        ("kv heads", f"{c['n_kv_heads']}"),
        ("ffn_dim", f"{c['ffn_dim']:,} ({c['ffn_dim'] / c['d_model']:.3f} x d_model)"),
        ("vocab", f"{c['vocab_size']:,} ({'tied' if c['tie_embeddings'] else 'untied'} embeddings)"),
        ("params (exact)", f"{exact(p['total'])}, {100 * rec['relative_error']:+.2f}% from the target"),
        ("non-embedding", exact(p["non_embedding"])),
        ("tokens", f"{count(rec['chinchilla_tokens'])} ({rec['rules']['tokens']})"),
        ("train FLOPs", sci(rec["train_flops_chinchilla"])),
        ("KV cache/token", size(rec["kv_cache_bytes_per_token"]) + " (bf16)"),
    ]
    stdout_console().print(_kv_table(f"Recommended for {aim}", rows))
    rules = rec["rules"]
    stdout_console().print(
        f"Rules: head_dim {rules['head_dim']}; ffn {rules['ffn']}; {rules['kv_heads']}; {rules['aspect']}; "
        f"tied embeddings {rules['tied_embeddings']}. `--json` prints the config."
    )
