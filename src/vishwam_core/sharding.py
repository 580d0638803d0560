"""Logical axis names and the ONE table mapping them to mesh axes; mesh construction.

Modules annotate parameters with logical names only (`EMBED`, `MLP`, ...). Which mesh axis a logical
axis lands on is decided here and nowhere else, so changing a parallelism strategy is one edit.
This module knows nothing of models, training or files.
"""

from __future__ import annotations

from collections.abc import Sequence

# Logical axis names.
BATCH = "batch"
LENGTH = "length"
LAYERS = "layers"
VOCAB = "vocab"
EMBED = "embed"
Q_HEADS = "q_heads"  # the fused (heads * head_dim) output of the query projection
KV_HEADS = "kv_heads"  # the fused (kv_heads * head_dim) output of the key/value projections
MLP = "mlp"
NORM = "norm"

# Mesh axis names, outermost first.
MESH_AXES = ("data", "fsdp", "tensor")

# The rules table: logical axis -> mesh axis (or a tuple of mesh axes, or None = replicated).
# Weights: FSDP shards the model dimension, tensor parallelism the heads / mlp / vocab dimension
# (Megatron-style column/row split). Activations: the batch spreads over data and fsdp.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    (BATCH, ("data", "fsdp")),
    (LENGTH, None),
    (LAYERS, None),
    (VOCAB, "tensor"),
    (EMBED, "fsdp"),
    (Q_HEADS, "tensor"),
    (KV_HEADS, "tensor"),
    (MLP, "tensor"),
    (NORM, None),
)


def logical_to_mesh(axes: Sequence[str | None], rules=LOGICAL_AXIS_RULES):
    """PartitionSpec for a tuple of logical axis names, under `rules`."""
    from jax.sharding import PartitionSpec

    table = dict(rules)
    unknown = [a for a in axes if a is not None and a not in table]
    if unknown:
        raise KeyError(f"logical axes {unknown} have no rule in the sharding table")
    return PartitionSpec(*(table[a] if a is not None else None for a in axes))


def parse_mesh_spec(spec: str, device_count: int) -> dict[str, int]:
    """'data=2,fsdp=-1,tensor=1' -> sizes whose product is device_count (-1 takes the rest)."""
    from vishwam_core.errors import VishwamError

    sizes = {a: 1 for a in MESH_AXES}
    rest = None
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        if name not in sizes or not value.lstrip("-").isdigit():
            raise VishwamError(
                f"Bad mesh spec '{spec}': expected e.g. data=2,fsdp=-1,tensor=1 over {MESH_AXES}."
            )
        if int(value) == -1:
            rest = name
        else:
            sizes[name] = int(value)
    known = 1
    for a, n in sizes.items():
        if a != rest:
            known *= n
    if rest is not None:
        if device_count % known:
            raise VishwamError(f"Mesh '{spec}' cannot fill {device_count} devices.")
        sizes[rest] = device_count // known
    total = 1
    for n in sizes.values():
        total *= n
    if total != device_count:
        raise VishwamError(f"Mesh '{spec}' has {total} slots but there are {device_count} devices.")
    return sizes


def make_mesh(spec: str = "data=-1"):
    """A jax Mesh over all devices with Auto axis types (sharding propagates through jit)."""
    import jax
    from jax.sharding import AxisType

    sizes = parse_mesh_spec(spec, jax.device_count())
    return jax.make_mesh(tuple(sizes.values()), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
