"""Training in several processes or on several nodes: every wait on another process is bounded
by train.ddp_timeout, and all ranks resume from rank 0's checkpoint, or none does."""

from __future__ import annotations

import contextlib
import re
import signal
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, Strategy

from digitpipe.core.config import TrainParams
from digitpipe.core.errors import DigitpipeError

DDP_OPTIONS = {"ddp": {}, "ddp_find_unused_parameters_true": {"find_unused_parameters": True}}
RECEIVED_CHECKPOINT = "last.ckpt"


def strategy(train: TrainParams) -> str | Strategy:
    """train.strategy, as a Lightning strategy whose waits on other processes (the rendezvous of
    all nodes, every collective) give up after train.ddp_timeout: Lightning's default is 30
    minutes, which a node that never starts makes every other node wait out."""
    several = train.num_nodes > 1 or (isinstance(train.devices, int) and train.devices > 1)
    name = "ddp" if train.strategy == "auto" and several else train.strategy
    timeout = timedelta(seconds=train.ddp_timeout)
    if name in DDP_OPTIONS:
        return DDPStrategy(timeout=timeout, **DDP_OPTIONS[name])
    if name == "fsdp":
        return FSDPStrategy(timeout=timeout)
    return name


@contextlib.contextmanager
def agreed_resume(
    trainer: L.Trainer, rank_zero_choice: Path | None, timeout_s: int
) -> Iterator[Path | None]:
    """The checkpoint every rank resumes from: rank 0's choice (``rank_zero_choice``; other ranks
    pass None), its bytes sent to the other ranks, whose nodes may not have it. With more than
    one process this first starts this node's other processes and waits for every node's."""
    if trainer.world_size == 1:
        yield rank_zero_choice
        return
    join(trainer, timeout_s)
    payload = rank_zero_choice.read_bytes() if trainer.is_global_zero and rank_zero_choice else b""
    received = broadcast_bytes(payload, trainer.strategy.root_device)
    if trainer.is_global_zero or not received:
        yield rank_zero_choice if trainer.is_global_zero else None
        return
    # Lightning resumes from a file: a temporary copy, so this node keeps no stale checkpoint.
    with tempfile.TemporaryDirectory(prefix="digitpipe-resume-") as folder:
        copy = Path(folder) / RECEIVED_CHECKPOINT
        copy.write_bytes(received)
        yield copy


def broadcast_bytes(payload: bytes, device: torch.device) -> bytes:
    """Rank 0's ``payload`` on every rank: sent as tensors (length, then bytes), never pickled."""
    length = torch.tensor([len(payload)], dtype=torch.int64, device=device)
    dist.broadcast(length, src=0)
    if not length.item():
        return b""
    data = (
        torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device)
        if dist.get_rank() == 0
        else torch.empty(int(length.item()), dtype=torch.uint8, device=device)
    )
    dist.broadcast(data, src=0)
    return data.cpu().numpy().tobytes()


def join(trainer: L.Trainer, timeout_s: int) -> None:
    """Start this node's other training processes (Lightning's launcher, when no launcher such
    as torchrun did) and form the process group with every node's, within the strategy's
    timeout; a node that never joins becomes one message."""
    with terminable_in_native_waits():
        try:
            trainer.strategy.launcher.launch(trainer.strategy.setup_environment)
        except dist.DistError as exc:
            raise DigitpipeError(missing_peer(trainer, exc, timeout_s)) from None


@contextlib.contextmanager
def terminable_in_native_waits() -> Iterator[None]:
    """SIGTERM and SIGHUP end the process at once while it waits in torch's C++ rendezvous:
    Python's handlers (the stage's cleanups) would run only after that wait returns, so a
    killed `dvc repro` left its stage waiting on. Nothing needs cleaning up yet: no output is
    written and no MLflow run is started before the nodes have joined."""
    handled = [
        number
        for number in (signal.SIGTERM, signal.SIGHUP)
        if signal.getsignal(number) not in (signal.SIG_IGN, signal.SIG_DFL, None)
    ]
    previous = {number: signal.signal(number, signal.SIG_DFL) for number in handled}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def missing_peer(trainer: L.Trainer, exc: Exception, seconds: int) -> str:
    """What to do when the process group did not form within train.ddp_timeout."""
    environment = trainer.strategy.cluster_environment
    address = f"{environment.main_address}:{environment.main_port}"
    nodes, node = trainer.num_nodes, trainer.node_rank
    launch = (
        "Start the same command on every node within train.ddp_timeout of each other, with "
        f"num_nodes {nodes}, MASTER_ADDR and MASTER_PORT of node 0 ({address}) and NODE_RANK "
        "set to the node's number (torchrun: --nnodes, --node-rank, --master-addr, "
        "--master-port; SLURM: srun), or raise train.ddp_timeout."
    )
    if trainer.is_global_zero:
        joined = re.search(r"(\d+)/(\d+) clients joined", str(exc))
        count = f"only {joined[1]} of {joined[2]} processes" if joined else "not every process"
        absent = "node 1" if nodes == 2 else f"one of nodes 1..{nodes - 1}"
        if nodes == 1:
            absent = "a process of this node"
        return (
            f"train: {count} joined within train.ddp_timeout ({seconds} s): {absent} never "
            f"started or cannot reach {address}. {launch}"
        )
    return (
        f"train: this is node {node} of {nodes}; node 0 did not answer at {address} within "
        f"train.ddp_timeout ({seconds} s): start it, and check that this node reaches that "
        f"address and port. {launch}"
    )
