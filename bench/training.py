"""The training core shared by the cascade stages (``bench.train``) and shapes-CLIP
(``bench.shapes_clip.train``).

A trainer brings its model, optimizer and ``loss_at(step)`` (data keyed by seed and step); this
module owns the rest: resume, the loss log, the checkpoint format, the EMA, the learning-rate
warm-up, ``max_minutes`` stopping and the periodic save. A killed run resumes from
``train_state.safetensors`` and continues exactly. That file holds (metadata: the trainer's)

    model.<key>                              the model's state_dict
    ema.<key>                                the EMA copy's state_dict (trainers with an EMA)
    adam.<step|exp_avg|exp_avg_sq>.<param>   Adam state by parameter name
    step                                     steps done (int64)

``loss.csv`` has one row per step: step, loss, training seconds so far (summed over resumes);
``loss.png`` plots it at every save.
"""
from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from tqdm import tqdm

from imagen.checkpoint import atomic_save
from imagen.device import resolve_device
from imagen.nn import Attention

log = logging.getLogger("bench.training")
STATE_FILE = "train_state.safetensors"
LOSS_FILE = "loss.csv"
LOSS_PNG = "loss.png"


def setup(device: str, threads: int = 0) -> torch.device:
    """Set torch's thread count (0: its default) and resolve the training device."""
    if threads:
        torch.set_num_threads(threads)
    return resolve_device(device)


def lr_schedule(lr: float, step: int, warmup: int, steps: int = 0, cooldown: int = 0) -> float:
    """``lr`` at ``step``: ramped up linearly over the first ``warmup`` steps and, with ``cooldown``, down
    linearly towards 0 over the last ``cooldown`` steps before ``steps`` (lr / cooldown at the last one).
    ``step`` counts from the chain's start, so a continued phase cools down over its own last steps."""
    up = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    down = min(1.0, (steps - step) / cooldown) if cooldown > 0 else 1.0
    return lr * up * down


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, max_decay: float) -> None:
    """EMA of the parameters; the decay (1 + step) / (10 + step) grows up to ``max_decay``."""
    decay = min(max_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1 - decay)


# -- checkpoint format ----------------------------------------------------------------------
def adam_tensors(opt: torch.optim.Optimizer, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The optimizer state as ``adam.<key>.<parameter name>``."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for p, st in opt.state.items():
        for k, v in st.items():
            out[f"adam.{k}.{names[id(p)]}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def load_adam(opt: torch.optim.Optimizer, model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Restore ``adam.<key>.<name>`` (and ``opt.<index>.<key>``: shapes-CLIP states before this core)."""
    names = {id(p): n for n, p in model.named_parameters()}
    index = {names[id(p)]: i for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        kind, _, rest = key.partition(".")
        if kind == "adam":
            k, name = rest.split(".", 1)
            state.setdefault(index[name], {})[k] = v
        elif kind == "opt":
            i, k = rest.split(".", 1)
            state.setdefault(int(i), {})[k] = v
    sd = opt.state_dict()
    sd["state"] = state
    opt.load_state_dict(sd)   # puts each tensor where the optimizer keeps it (step on the CPU)


def state_tensors(model: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
                  ema: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Everything a resumed run needs, in the ``train_state.safetensors`` layout."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    tensors.update(adam_tensors(opt, model))
    tensors["step"] = torch.tensor(step)
    return tensors


def model_weights(tensors: dict[str, torch.Tensor], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The model's state_dict out of a ``train_state.safetensors`` layout (its ``model.*`` keys; the EMA
    copy's with ``prefix="ema."``)."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def state_step(path: str | Path) -> int:
    """The steps done in a ``train_state.safetensors`` (its ``step`` tensor alone is read)."""
    with safe_open(str(path), framework="pt") as f:
        return int(f.get_tensor("step").item())


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """``module.load_state_dict(state)``, where ``module`` may hold whole attention layers that ``state``
    lacks (a base continued with more ``arch.attn_resolutions`` than it was trained with): such layers end
    their blocks, keep their initial weights, and their zero output projections make them the
    identity, so the module computes what ``state`` did. Any other missing or unexpected key, or a layer
    only partly in ``state``, raises. Returns the grown layers' names."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    attention = [n for n, m in module.named_modules() if isinstance(m, Attention)]
    grown = sorted({n for k in missing for n in attention if k.startswith(n + ".")})
    keys = {n: {f"{n}.{k}" for k in module.get_submodule(n).state_dict()} for n in grown}
    partial = {n: sorted(ks - set(missing)) for n, ks in keys.items() if not ks <= set(missing)}
    not_trailing = [n for n in grown if not _trailing(module, n, grown)]
    other = sorted(set(missing) - set().union(*keys.values()))
    if unexpected or partial or not_trailing or other:
        raise RuntimeError("the state does not fit the model: " + "; ".join(filter(None, [
            other and f"missing {len(other)} weights outside attention layers, e.g. {other[:3]}",
            unexpected and f"{len(unexpected)} unexpected weights, e.g. {unexpected[:3]}",
            partial and f"attention layers only partly in the state: {sorted(partial)[:3]} "
                        f"(it has {partial[sorted(partial)[0]][:2]}...)",
            not_trailing and f"missing attention layers followed by layers the state has: {not_trailing[:3]}"])))
    return grown


def _trailing(module: torch.nn.Module, name: str, grown: list[str]) -> bool:
    """Whether layer ``name`` and every layer after it in its block (a ``ModuleList``) are grown: a layer
    added anywhere else would shift the names of the layers after it (self-attention is grown by
    ``bench.train.grow_self_attention`` instead)."""
    parent, _, index = name.rpartition(".")
    block = module.get_submodule(parent) if parent else module
    if not (isinstance(block, torch.nn.ModuleList) and index.isdigit()):
        return False
    return all(f"{parent}.{j}" in grown for j in range(int(index), len(block)))


def load_state(tensors: dict[str, torch.Tensor], model: torch.nn.Module, opt: torch.optim.Optimizer,
               ema: torch.nn.Module | None = None) -> int:
    """Restore model, EMA and optimizer from ``state_tensors`` output; returns the step. Attention layers
    the state lacks start as the identity (``load_weights``) with fresh Adam moments."""
    grown = load_weights(model, model_weights(tensors))
    if grown:
        log.info("attention grown at %s (zero output: the same function at this step)", ", ".join(grown))
    if ema is not None and load_weights(ema, model_weights(tensors, "ema.")) != grown:
        raise RuntimeError("the state's EMA copy lacks other attention layers than its model")
    load_adam(opt, model, tensors)
    return int(tensors["step"].item())


# -- loss log -------------------------------------------------------------------------------
class LossLog:
    """``loss.csv``: step, loss, training seconds (continuing over resumes)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.seconds0 = 0.0   # training time before this process

    def restart(self, start: int) -> None:
        """Keep the rows of steps before ``start`` (a resumed run redoes the later ones)."""
        rows: list[list[str]] = []
        if start and self.path.exists():
            with self.path.open(newline="") as f:
                rows = [r for r in csv.reader(f) if r and int(r[0]) < start]
        self.seconds0 = float(rows[-1][2]) if rows and len(rows[-1]) > 2 else 0.0
        if not start:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            csv.writer(f).writerows(rows)
        os.replace(tmp, self.path)

    def append(self, step: int, loss: float, seconds: float) -> None:
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([step, f"{loss:.6f}", f"{seconds:.1f}"])


def plot_loss(loss_file: Path, png: Path, marks: list[tuple[int, str]] | None = None) -> None:
    """Loss per step (log scale) and its running mean, written atomically to ``png``; ``marks``: (step, label)
    pairs drawn as labelled vertical lines (a chain's phase starts)."""
    import matplotlib  # ~0.5 s to import and it sets a global backend: only when a checkpoint is written

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not loss_file.exists():
        return
    data = np.loadtxt(loss_file, delimiter=",", ndmin=2)
    if len(data) == 0:
        return
    steps, loss = data[:, 0], data[:, 1]
    k = max(1, len(loss) // 100)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, alpha=0.25, lw=0.6, label="loss")
    ax.plot(steps[k - 1:], smooth, lw=1.5, label=f"mean of {k}")
    for step, label in marks or []:
        ax.axvline(step, color="grey", lw=0.6, ls=":")
        ax.annotate(label, (step, 1), xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right",
                    fontsize=7, color="grey")
    ax.set(xlabel="step", ylabel="loss", yscale="log", title=f"training loss ({png.parent.name})")
    ax.legend()
    fig.tight_layout()
    tmp = png.with_name(png.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, png)


# -- the loop -------------------------------------------------------------------------------
@dataclass
class Loop:
    """How long to train, how often to save, when to stop early."""

    steps: int
    ckpt_every: int = 100
    max_minutes: float | None = None   # wall time of this process, then save and stop
    desc: str = "train"
    continue_from: str | Path | None = None   # another run's state, read when this run has none
    stop_when: Callable[[int], bool] | None = None   # asked at each checkpoint, the last too: stop there (a final save)


OnSave = Callable[[int, float, bool], None]   # (steps done, training seconds, final) -> None


class Trainer:
    """One run's model, optimizer, optional EMA and state directory; ``run`` trains or resumes."""

    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer, state_dir: str | Path,
                 meta: dict[str, Any], ema: torch.nn.Module | None = None, ema_decay: float = 0.999,
                 grad_clip: float = 1.0):
        self.model, self.opt, self.ema, self.meta = model, opt, ema, meta
        self.ema_decay, self.grad_clip = ema_decay, grad_clip
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file = self.state_dir / STATE_FILE
        self.loss_log = LossLog(self.state_dir / LOSS_FILE)

    def resume(self, continue_from: str | Path | None = None, loop_steps: int = 0) -> int:
        """Load ``train_state.safetensors`` if there is one, else the ``continue_from`` state (another
        run's: the next phase of a curriculum) if given; returns the step to start from."""
        own = self.state_file.exists()
        source, start = (self.state_file if own else continue_from), 0
        if source is not None:
            if not own and not Path(source).is_file():
                raise FileNotFoundError(f"continue_from {source}: no such train state (run the phase before first)")
            start = load_state(load_file(str(source)), self.model, self.opt, self.ema)
            log.info("%s from %s at step %d", "resumed" if own else "continued", source, start)
            if not own and start >= loop_steps:
                raise ValueError(f"continue_from {source} is at step {start}; this phase's steps "
                                 f"({loop_steps}) count on from there, so they must be more")
        self.loss_log.restart(start)
        return start

    def save(self, step: int, seconds: float = 0.0, final: bool = False, on_save: OnSave | None = None) -> None:
        """Write the train state, then the trainer's own outputs (``on_save``), then ``loss.png``."""
        atomic_save(state_tensors(self.model, self.opt, step, self.ema), self.state_file, self.meta)
        if on_save is not None:
            on_save(step, seconds, final)
        plot_loss(self.loss_log.path, self.state_dir / LOSS_PNG)

    def update(self, loss: torch.Tensor, lr: float, step: int) -> None:
        """One optimizer step on ``loss`` at ``lr`` (times a group's ``lr_scale``): gradient clipping, AdamW, EMA."""
        for group in self.opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        if self.ema is not None:
            ema_update(self.ema, self.model, step, self.ema_decay)

    def run(self, loop: Loop, loss_at: Callable[[int], torch.Tensor], lr_at: Callable[[int], float],
            on_save: OnSave | None = None, postfix: Callable[[], dict[str, str]] | None = None) -> int:
        """Resume, then train steps up to ``loop.steps``; returns the number of steps done."""
        start = self.resume(loop.continue_from, loop.steps)
        t0 = time.time()
        bar = tqdm(range(start, loop.steps), initial=start, total=loop.steps, desc=loop.desc, dynamic_ncols=True)
        done = start
        for step in bar:
            loss = loss_at(step)
            self.update(loss, lr_at(step), step)
            value, seconds = loss.item(), self.loss_log.seconds0 + time.time() - t0
            self.loss_log.append(step, value, seconds)
            bar.set_postfix(loss=f"{value:.4f}", **(postfix() if postfix else {}))
            done = step + 1
            over = loop.max_minutes is not None and time.time() - t0 > 60 * loop.max_minutes
            due = done % loop.ckpt_every == 0 or done == loop.steps or over
            stop = due and loop.stop_when is not None and loop.stop_when(done)
            if due:
                self.save(done, seconds, final=done == loop.steps or over or stop, on_save=on_save)
            if stop:
                log.info("stopping at step %d: the phase's stop condition holds", done)
                break
            if over:
                log.info("stopping at step %d: max_minutes=%s reached", done, loop.max_minutes)
                break
        return done
