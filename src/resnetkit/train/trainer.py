"""The training loop: fast in-memory data, checkpoints that survive kill -9, DDP, EMA, AMP."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from resnetkit.data.fast import TensorLoader
from resnetkit.data.multilabel import (
    evaluate_multi_label,
    exact_matches,
    multi_label_loss,
    smooth_targets,
)
from resnetkit.data.transforms import MixCut, soft_cross_entropy
from resnetkit.devices import resolve_device
from resnetkit.evaluate.metrics import evaluate_batches
from resnetkit.models.model_dir import read_model_meta
from resnetkit.models.registry import create_model
from resnetkit.models.resnet import ResNet
from resnetkit.text import plural
from resnetkit.train import distributed, rehearsal
from resnetkit.train.checkpoint import (
    latest_checkpoint,
    state_dict_for_save,
)
from resnetkit.train.data_setup import build_train_data, training_side
from resnetkit.train.distill import Teacher, distillation_loss, load_teacher, open_teacher
from resnetkit.train.distributed import DistInfo
from resnetkit.train.divergence import (
    check_finite_weights,
    deferred_error,
    diverged_error,
    not_finite,
    record_bad,
)
from resnetkit.train.errors import TrainingDiverged as TrainingDiverged  # imported from here too
from resnetkit.train.errors import TrainingInterrupted
from resnetkit.train.model_output import write_model_output
from resnetkit.train.model_setup import fit_head, freeze_stages
from resnetkit.train.optim import WeightEMA, autocast, build_optimizer
from resnetkit.train.preflight import (
    check_classes,
    check_trainable,
    check_validation,
    per_rank_batch,
    run_length,
    warn_idle_distillation,
)
from resnetkit.train.provenance import provenance
from resnetkit.train.reporting import (
    SkippedFiles,
    data_on_device,
    describe_start,
    epoch_line,
    note,
    row_scores,
)
from resnetkit.train.run_folder import (
    check_out_folder,
    remove_drafts,
    run_lock,
    run_record,
    warn_moved_data,
)
from resnetkit.train.run_state import open_resume, resume_run, save_run
from resnetkit.train.runlog import RunLog
from resnetkit.train.schedule import lr_multiplier
from resnetkit.train.signals import StopSignals
from resnetkit.train.spec import TrainResult as TrainResult  # imported from here too
from resnetkit.train.spec import TrainSpec as TrainSpec  # imported from here too

# Steps between looks for a non-finite loss when steps do not wait for the device (a GPU).
SYNC_EVERY = 100


class Trainer:
    """One training run; ``run()`` trains to the end (or resumes) and writes a model directory."""

    def __init__(self, spec: TrainSpec) -> None:
        self.spec = spec
        self.signals = StopSignals()  # SIGTERM or Ctrl-C stop the run after a step, see run()
        self.stop_votes = 0.0  # processes that had received one, at the last all-reduce (DDP)
        # Whether the main process's clock says a time-based checkpoint is due, as the last
        # all-reduce carried it (DDP): every process saves after the same step.
        self.save_votes = 0.0
        self._last_save = time.monotonic()
        self._last_good_batch: tuple[Tensor, Tensor] | None = None
        self._skipped_files = SkippedFiles()  # the undecodable files named so far
        self.image_size = training_side(spec.recipe, spec.dataset, spec.image_size)
        # the saved recipe (recipe.yaml, the model's provenance) says what side trained
        self.recipe = recipe = replace(spec.recipe, train_image_size=self.image_size)
        self.device, self.dist = self._set_up_process()
        self.out = spec.out
        self.ckpt_root = self.out / "checkpoints"
        check_trainable(spec.model)
        if self.dist.is_main and spec.writes:  # before the data loads (minutes for a folder)
            check_out_folder(self.out, self.ckpt_root, self.spec.resume)
        # --resume: the checkpoint's state, checked against the command, the recipe and the
        # model options before the data loads; the data's facts are checked in try_resume.
        self._resume_state: tuple[Path, dict[str, Any]] | None = None
        if spec.resume and spec.writes:
            self._resume_state = self._open_resume()
        teacher_model = open_teacher(recipe.teacher, self.out) if recipe.teacher else None
        if self.dist.is_main:
            warn_idle_distillation(recipe)
        self._set_up_data()
        data = self.data
        # On an accelerator a step does not wait for the device to report its loss and
        # accuracy (three waits a step left a GPU idle most of the time): the sums stay on the
        # device, and a NaN or infinite loss is looked for every SYNC_EVERY steps and before
        # anything is saved, evaluated or reported, naming the step where it first appeared.
        # DDP keeps the per-step check: the same all-reduce carries the votes to stop.
        self._defer_sync = self.device.type != "cpu" and not self.dist.enabled
        self._first_bad_step = torch.full((), -1, dtype=torch.int64, device=self.device)
        self._first_bad_loss = torch.zeros((), device=self.device)
        self.loss_weights = (
            data.class_weights().to(self.device) if recipe.class_balance == "loss" else None
        )
        # resuming, said once the resume is accepted (see _run)
        check_validation(recipe, data, spec.data_dir, warn=self.dist.is_main and not spec.resume)
        self.mixcut = MixCut(
            recipe.mixup_alpha,
            recipe.cutmix_alpha,
            len(self.classes),
            0.0 if data.multi_label else recipe.label_smoothing,  # multi-label: in the loss
        )
        self.iters_per_epoch, self.total_iters, self.epochs = run_length(
            recipe, data, spec.data_dir
        )

        self.model = self._build_model()
        self.teacher = self._load_teacher(teacher_model)
        self.ema: WeightEMA | None = None
        if recipe.ema_decay > 0:
            self.ema = WeightEMA(self.model, recipe.ema_decay)
        self.net = self._wrap_model()
        self._graph_steps = self._cuda_graph_steps()
        self.optimizer = build_optimizer(self.model, recipe)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_multiplier(recipe, self.total_iters)
        )
        self.scaler = torch.amp.GradScaler(enabled=recipe.precision == "fp16")
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        # Where this process's pace is measured from: the start of its second step (the first
        # pays for torch.compile and warm-up), as (time, step).
        self.pace_from: tuple[float, int] | None = None
        self.best_top1 = -1.0  # of the validation split's score: top-1, or mAP (multi-label)
        self.best_loss = math.inf  # breaks ties of top-1 (small validation splits)
        self.evals_since_best = 0
        self.best_weights: dict[str, Tensor] | None = None
        self.stopped_early = False
        self._resumed_at = -1  # the step this call began at (set when it runs)
        # The epoch so far, for a mid-epoch checkpoint: loss sum, correct, seen, seconds and
        # undecodable images met (a resumed pass does not decode the batches it skips).
        self.epoch_partial: list[Any] = [0.0, 0, 0, 0.0, 0]
        self.runlog = RunLog(self.out, self.dist.is_main)

    # ----------------------------------------------------------------- set-up helpers
    def _set_up_process(self) -> tuple[torch.device, DistInfo]:
        """This process's thread count, device and place among torchrun's processes, and its
        seed; a recipe the device cannot run is refused here, before the data loads."""
        recipe = self.recipe
        if recipe.num_threads:
            torch.set_num_threads(recipe.num_threads)
        device = resolve_device(self.spec.device)
        if recipe.sync_bn and device.type != "cuda":
            raise ValueError(
                "sync_bn needs a GPU: torch's SyncBatchNorm works only on CUDA. On CPU leave it "
                "off (each process normalises its own batch, as the paper's multi-GPU runs did)."
            )
        if recipe.precision == "fp16" and device.type != "cuda":  # before the data loads
            raise ValueError(
                "precision fp16 needs a GPU (it relies on loss scaling); use bf16 on CPU"
            )
        dist = distributed.init_distributed(device)
        self.signals.announce = dist.is_main
        if device.type == "cuda" and dist.enabled:
            device = torch.device("cuda", dist.local_rank)
            torch.cuda.set_device(device)
        torch.manual_seed(recipe.seed + dist.rank)
        if recipe.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        return device, dist

    def _set_up_data(self) -> None:
        """The data (``self.data``) and what the steps read of it: the classes, a multi-label
        run's label table and selection score, the normalization and the loaders (in-memory
        data on a GPU moved there)."""
        spec, recipe = self.spec, self.recipe
        self.data = data = build_train_data(
            dataset=spec.dataset,
            data_dir=spec.data_dir,
            recipe=recipe,
            per_rank_batch=per_rank_batch(recipe, self.dist.world_size),
            image_size=self.image_size,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            download=spec.download,
            train_subset=spec.train_subset,
            eval_subset=spec.eval_subset,
            normalization=spec.normalization,
            pin_memory=self.device.type == "cuda",
        )
        self.classes = data.classes
        # Multi-label: (label sets, classes) targets on the device, and the metric that
        # chooses the best epoch (mean average precision instead of top-1).
        self.label_table = data.label_table
        if self.label_table is not None:
            self.label_table = self.label_table.to(self.device)
        self.score = "map" if data.multi_label else "top1"
        check_classes(data, spec.data_dir)
        self.norm = data.norm
        self.train_loader = data.train_loader
        self.eval_loaders = data.eval_loaders
        if self.device.type == "cuda":  # in-memory data that fits: batches made on the GPU
            for loader in (self.train_loader, *self.eval_loaders.values()):
                if isinstance(loader, TensorLoader):
                    loader.to(self.device)

    def _load_teacher(self, model: nn.Module | None) -> Teacher | None:
        """The recipe's teacher (``model``, opened before the data loaded) fitted to this run's
        classes and inputs, on its device; None without one."""
        recipe = self.recipe
        if not recipe.teacher:
            return None
        teacher = load_teacher(
            recipe.teacher,
            classes=list(self.classes),
            norm=self.norm,
            input_size=self.data.train_size,
            in_chans=self.model.config.in_chans,
            multi_label=self.data.multi_label,
            model=model,
        ).to(self.device, channels_last=recipe.channels_last)
        # under torchrun each process loads its own copy: all must learn from the same one
        digests = distributed.all_gather_objects(teacher.sha256, self.dist)
        if len(set(digests)) > 1:
            raise ValueError(
                f"teacher {recipe.teacher} holds other weights on some processes (SHA-256 "
                f"by rank: {', '.join(str(d)[:12] for d in digests)}): give every node the "
                "same copy"
            )
        return teacher

    def _wrap_model(self) -> nn.Module:
        """What the steps call: the model, under DDP when torchrun started several processes,
        compiled when the recipe says so."""
        net: nn.Module = self.model
        if self.dist.enabled:
            net = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if self.recipe.compile:
            net = torch.compile(net, mode=self.recipe.compile_mode)  # type: ignore[assignment]
        return net

    def _cuda_graph_steps(self) -> bool:
        """Whether the compiled steps are CUDA graphs (reduce-overhead), which reuse their
        output memory: each step's beginning is marked. Gradient accumulation is refused then."""
        recipe = self.recipe
        graphs = recipe.compile and recipe.compile_mode in ("reduce-overhead", "max-autotune")
        if graphs and recipe.accum_steps > 1 and self.device.type == "cuda":
            raise ValueError(  # pytorch/pytorch#169545
                f"compile_mode {recipe.compile_mode!r} (CUDA graphs) with accum_steps "
                f"{recipe.accum_steps}: the graphs reuse the memory the first micro-batch's "
                "gradients live in, so the next would overwrite them; use compile_mode default, "
                "or accum_steps 1"
            )
        return graphs

    def _build_model(self) -> ResNet:
        if isinstance(self.spec.model, ResNet):
            model = self.spec.model
            fit_head(model, self.classes, self.spec.new_head)
        else:
            built = create_model(
                self.spec.model, num_classes=len(self.classes), **self.spec.model_options
            )
            assert isinstance(built, ResNet)
            model = built
        self.arch = model.name
        # what the weights mean: the unit variants of the 2016 paper share every weight name
        self.arch_config = json.loads(json.dumps(asdict(model.config)))
        if self.recipe.sync_bn and self.dist.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[assignment]
        # after the conversion: its BatchNorms are the ones to keep in eval mode
        self._frozen_norms = freeze_stages(model, self.recipe.freeze_stages)
        model = model.to(self.device)
        if self.recipe.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return model

    def _set_train_mode(self) -> None:
        self.model.train()
        if self.recipe.freeze_bn:
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        for m in self._frozen_norms:  # those of --freeze-stages
            m.eval()

    # ----------------------------------------------------------------- checkpoints
    def save(self) -> None:
        self._check_deferred()
        # on every process: they all stop alike
        check_finite_weights(self.model, self.step, self.ckpt_root)
        save_run(self)

    def _open_resume(self) -> tuple[Path, dict[str, Any]] | None:
        spec = self.spec
        return open_resume(self.out, self.ckpt_root, spec.origin, self.recipe, spec.model_options)

    def try_resume(self) -> bool:
        """Continue from the latest checkpoint (False: there is none). Nothing is written
        before every check has passed: a refused resume leaves the run folder as it was."""
        opened = self._resume_state
        if opened is None or opened[0] != latest_checkpoint(self.ckpt_root):
            opened = self._open_resume()  # another checkpoint was written since __init__
        self._resume_state = None  # the state's memory is not kept for the whole run
        if opened is None:
            return False
        folder = resume_run(self, opened)
        if not self._done():  # a finished run is said to be so by _run, once
            self._log(f"resumed from {folder} at step {self.step} (epoch {self.epoch + 1})")
        return True

    def _done(self) -> bool:
        """Whether the loop has nothing left to train (the last step taken, or stopped early)."""
        return self.step >= self.total_iters or self.stopped_early

    # ----------------------------------------------------------------- logging
    def _describe_start(self) -> str:
        return describe_start(self)

    def _log(self, message: str) -> None:
        if self.dist.is_main:
            note(message, self.spec.progress, self.spec.log_epochs)

    def _name_skipped_files(self) -> None:
        """One line per undecodable file of a streamed folder, the first time it is met; under
        torchrun each process reads its own share, and the main process names them all."""
        loaders = [self.data.train_loader, *self.data.eval_loaders.values()]
        for path, reason in self._skipped_files.new(loaders, self.dist):
            self._log(f"skipped {path}: {reason}")

    # ----------------------------------------------------------------- evaluation
    def evaluate(self, curves: bool = False) -> dict[str, Any]:
        """Every evaluation split's summary (``curves``: a multi-label run's precision-recall
        curves too)."""
        model = self.ema.module if self.ema is not None else self.model
        was_training = model.training
        model.eval()
        results: dict[str, Any] = {}
        for name, loader in self.eval_loaders.items():
            if self.label_table is not None:
                table = self.label_table.cpu()
                meter = evaluate_multi_label(model, loader, table, self.device)
                results[name] = meter.summary(self.classes, curves=curves)
            else:
                single = evaluate_batches(model, loader, len(self.classes), self.device)
                results[name] = single.summary(self.classes)
        if was_training:
            self._set_train_mode()
        return results

    # ----------------------------------------------------------------- training
    def _batches(self) -> Iterator[list[tuple[Tensor, Tensor]]]:
        """Groups of ``accum_steps`` micro-batches for the current epoch, from where we are.

        A micro-batch whose every image failed to decode still takes its place (so resuming
        counts the same positions as the loader): alone it is left out of its group; under DDP,
        where every process must take part in every step, this process's last good micro-batch
        stands in for it. A group left with no data is empty and its step is skipped.
        """
        self.train_loader.set_epoch(self.epoch)
        accum = self.recipe.accum_steps
        group: list[tuple[Tensor, Tensor]] = []
        positions = 0
        for batch in self.train_loader.iterate(self.batch_in_epoch * accum, keep_empty=True):
            positions += 1
            if batch is not None:
                self._last_good_batch = batch
                group.append(batch)
            elif self.dist.enabled:
                if self._last_good_batch is None:
                    raise RuntimeError(
                        f"rank {self.dist.rank}: every image of a training batch failed to "
                        "decode before any good batch this epoch; fix or remove the files "
                        "reported above"
                    )
                group.append(self._last_good_batch)
            if positions == accum:
                yield group
                group, positions = [], 0

    def _train_step(
        self, group: list[tuple[Tensor, Tensor]], defer: bool = False
    ) -> tuple[float | Tensor, int | Tensor, int]:
        """One optimizer step; returns the group's loss sum, correct count and images. With
        ``defer`` the first two stay device tensors and a non-finite loss is only recorded
        (see ``_check_deferred``), so that the step never waits for the device."""
        recipe = self.recipe
        if not group:  # every image of the step was undecodable (single process only)
            self.scheduler.step()
            return 0.0, 0, 0
        self.optimizer.zero_grad(set_to_none=True)
        loss_total: float | Tensor = 0.0
        correct: int | Tensor = 0
        seen = 0
        for i, (x, y) in enumerate(group):
            if self._graph_steps:
                torch.compiler.cudagraph_mark_step_begin()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if recipe.channels_last:  # the streaming loader yields NCHW batches
                x = x.contiguous(memory_format=torch.channels_last)
            targets: Tensor | None = None
            if self.label_table is not None:  # multi-label: the image's label set
                targets = self.label_table[y]
            if self.mixcut.enabled:
                g = torch.Generator().manual_seed(
                    (recipe.seed * 1_000_003 + self.step) * 64 + i * 8 + self.dist.rank
                )
                x, targets = self.mixcut(x, y, g, targets)
            sync = contextlib.nullcontext()
            if self.dist.enabled and i < len(group) - 1:
                sync = self.net.no_sync()  # type: ignore[operator]
            with sync:
                with autocast(recipe.precision, self.device):
                    logits = self.net(x)
                    if self.label_table is not None and targets is not None:
                        loss = multi_label_loss(
                            logits,
                            smooth_targets(targets, recipe.label_smoothing),
                            self.loss_weights,
                        )
                    elif targets is not None:
                        loss = soft_cross_entropy(logits, targets, self.loss_weights)
                    else:
                        loss = nn.functional.cross_entropy(
                            logits.float(),
                            y,
                            weight=self.loss_weights,
                            label_smoothing=recipe.label_smoothing,
                        )
                    if self.teacher is not None:
                        soft = distillation_loss(
                            logits,
                            self.teacher.logits(x),
                            recipe.distill_temperature,
                            multi_label=self.label_table is not None,
                        )
                        alpha = recipe.distill_alpha
                        loss = (1.0 - alpha) * loss + alpha * soft
                if defer:
                    self._first_bad_step, self._first_bad_loss = record_bad(
                        loss, self.step, self._first_bad_step, self._first_bad_loss
                    )
                elif self._diverged(loss):
                    value = float(loss.detach())
                    where = f" ({value} on this process)" if self.dist.enabled else ""
                    what = f"{'not finite' if where else value}{where}"
                    raise diverged_error(what, self.step, self.epoch + 1, self.ckpt_root)
                self.scaler.scale(loss / len(group)).backward()
            if self.label_table is not None:  # images with every class right
                hits = exact_matches(logits.detach(), self.label_table[y])
            else:
                hits = (logits.argmax(1) == y).sum()
            if defer:
                loss_total = loss_total + loss.detach().float() * len(y)
                correct = correct + hits
            else:
                loss_total += float(loss.detach()) * len(y)
                correct += int(hits)
            seen += len(y)
        if recipe.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), recipe.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return loss_total, correct, seen

    def _check_deferred(self) -> None:
        """Stop on a non-finite loss that ``defer``red steps recorded (one wait for the
        device). The weights in memory are past it, but no checkpoint is: this runs before
        every save."""
        if not self._defer_sync:
            return
        error = deferred_error(
            self._first_bad_step, self._first_bad_loss, self.iters_per_epoch, self.ckpt_root
        )
        if error is not None:
            raise error

    def _diverged(self, loss: Tensor) -> bool:
        """Whether the loss is NaN or infinite, on this process or (DDP) on any: every process
        must stop together, or the others would wait in the next all-reduce until a timeout."""
        bad = not_finite(loss)
        if self.dist.enabled:
            # The same all-reduce carries the votes to stop on a signal, and the main process's
            # word that a time-based checkpoint is due (the clocks of the others do not count).
            asked = float(self.signals.signum is not None)
            due = float(self.dist.is_main and self._save_time_due())
            flags = torch.tensor([asked, due], device=bad.device)
            votes = distributed.all_reduce_sum(torch.cat([bad, flags]), self.dist)
            bad, self.stop_votes, self.save_votes = votes[:1], float(votes[1]), float(votes[2])
        return bool(bad.item() > 0)

    def _save_time_due(self) -> bool:
        return time.monotonic() - self._last_save > self.recipe.checkpoint_every_s

    def trial(self) -> contextlib.AbstractContextManager[Iterator[list[tuple[Tensor, Tensor]]]]:
        """Training steps that leave no trace, for measuring: see :func:`rehearsal.trial`."""
        return rehearsal.trial(self)

    def plan(self, steps: int = 5) -> dict[str, Any]:
        """What this run would do and about how long it would take, writing nothing: see
        :func:`rehearsal.plan`."""
        return rehearsal.plan(self, steps)

    def run(self) -> TrainResult:
        if not self.dist.is_main:
            return self._run()
        check_out_folder(self.out, self.ckpt_root, self.spec.resume)
        self.out.mkdir(parents=True, exist_ok=True)
        with run_lock(self.out):
            return self._run()

    def _run(self) -> TrainResult:
        spec = self.spec
        if spec.resume:
            self.try_resume()
            check_validation(self.recipe, self.data, spec.data_dir, warn=self.dist.is_main)
            if self.dist.is_main and spec.dataset != "cifar10-sample":
                warn_moved_data(self.out, spec.data_dir, spec.origin.data_flag)
        self._resumed_at = self.step
        finished = spec.resume and self._done()
        if self.dist.is_main:
            remove_drafts(self.out)  # a killed run's half-written files
        self.runlog.reset(self.history)
        run = {
            "model": self.arch,
            "model_options": spec.model_options,
            "dataset": spec.dataset,
            # absolute: a resume from elsewhere can tell whether the data moved
            "data_dir": str(
                spec.data_dir if spec.dataset == "cifar10-sample" else spec.data_dir.resolve()
            ),
            "train_images": len(self.data.train_labels),
            "eval_images": self.data.eval_counts,
            "streaming": self.data.streaming,
            "augment": self.data.augment,  # resolved: what `augment: auto` became
            "world_size": self.dist.world_size,
            "device": str(self.device),
            "data_on_device": data_on_device(self.train_loader),
            "total_iters": self.total_iters,
            "origin": spec.origin.facts(),
        }
        resumed_at = self.step if spec.resume else None
        self.runlog.write_run_files(
            self.recipe, run_record(self.out, run, provenance(), resumed_at)
        )
        if finished:
            self._log(
                f"{self.out} had already finished ({plural(self.step, 'step')}): nothing to "
                "train; its weights are evaluated again"
            )
        else:
            self._log(self._describe_start())
        self._set_train_mode()
        self.signals.catch()
        try:
            try:
                self._train_loop()
            finally:
                self.runlog.close()
            # A signal from here on is too late to stop anything: the model directory is
            # written in full (a matter of seconds) rather than left half done.
            return self._finish()
        finally:
            self.signals.restore()

    def _train_loop(self) -> None:
        spec, recipe = self.spec, self.recipe
        self._last_save = time.monotonic()
        first_step = self.step
        postfix_at = 0.0
        while self.step < self.total_iters and not self.stopped_early:
            if self.batch_in_epoch == 0:
                self.epoch_partial = [0.0, 0, 0, 0.0, 0]
            # Resumed mid-epoch: the epoch's sums so far come from the checkpoint, so its
            # metrics row is the same as an uninterrupted run's.
            loss_sum, correct, seen, before, skipped_before = self.epoch_partial
            epoch_start = time.monotonic() - before
            remaining = min(
                self.iters_per_epoch, self.total_iters - self.epoch * self.iters_per_epoch
            )
            bar = tqdm(
                total=remaining,
                initial=self.batch_in_epoch,
                desc=f"epoch {self.epoch + 1}/{self.epochs}",
                disable=not (spec.progress and self.dist.is_main),
                unit="it",
                dynamic_ncols=True,
                leave=False,
            )
            for group in self._batches():
                t0 = time.monotonic()
                if self.pace_from is None and self.step > first_step:
                    self.pace_from = (t0, self.step)
                loss, ok, n = self._train_step(group, defer=self._defer_sync)
                self.train_seconds += time.monotonic() - t0
                loss_sum, correct, seen = loss_sum + loss, correct + ok, seen + n
                self.step += 1
                self.batch_in_epoch += 1
                bar.update(1)
                # Reading the sums waits for the device: deferred, at most once a second.
                if not bar.disable and (not self._defer_sync or t0 - postfix_at > 1.0):
                    postfix_at = t0
                    bar.set_postfix(
                        loss=f"{float(loss_sum) / max(seen, 1):.3f}",
                        # multi-label: images with every class right
                        **{
                            "exact" if self.label_table is not None else "acc": (
                                f"{100 * float(correct) / max(seen, 1):.1f}"
                            )
                        },
                        img_s=f"{n * self.dist.world_size / max(time.monotonic() - t0, 1e-9):.0f}",
                        lr=f"{self.scheduler.get_last_lr()[0]:.4g}",
                    )
                if spec.on_step is not None:
                    spec.on_step(self.step)
                if self.step % SYNC_EVERY == 0:
                    self._check_deferred()
                if self.step >= self.total_iters or self.batch_in_epoch >= remaining:
                    break
                due_time = self.save_votes > 0 if self.dist.enabled else self._save_time_due()
                due_iter = (
                    recipe.checkpoint_every_iters and self.step % recipe.checkpoint_every_iters == 0
                )
                stop = self._stop_agreed()
                if due_time or due_iter or stop:
                    elapsed = time.monotonic() - epoch_start
                    skipped = skipped_before + self.data.skipped_images()
                    loss_all, correct_all, seen_all, skipped_all = self._epoch_sums(
                        float(loss_sum), int(correct), seen, skipped
                    )
                    self.epoch_partial = [loss_all, correct_all, seen_all, elapsed, skipped_all]
                    self.save()
                    self._last_save = time.monotonic()
                if stop:
                    bar.close()
                    raise self._interrupted()
            bar.close()
            self._check_deferred()
            seconds = time.monotonic() - epoch_start
            self._end_epoch(float(loss_sum), int(correct), seen, seconds, skipped_before)
            self.save()
            self._last_save = time.monotonic()
            if self._stop_agreed() and self.step < self.total_iters and not self.stopped_early:
                raise self._interrupted()

    def _stop_agreed(self) -> bool:
        """Whether to stop now. Under DDP a signal counts once every process has seen it in the
        step's all-reduce, so that all of them stop after the same step."""
        if self.dist.enabled:
            return self.stop_votes > 0
        return self.signals.signum is not None

    def _interrupted(self) -> TrainingInterrupted:
        if self.dist.enabled:  # the vote makes every process stop after the same step; check it
            step = torch.tensor([float(self.step)], dtype=torch.float64, device=self.device)
            gathered = [torch.zeros_like(step) for _ in range(self.dist.world_size)]
            torch.distributed.all_gather(gathered, step)
            steps = [int(g.item()) for g in gathered]
            if len(set(steps)) > 1:
                raise RuntimeError(f"DDP processes stopped after different steps: {steps}")
        signum = self.signals.signum if self.signals.signum is not None else signal.SIGTERM
        return TrainingInterrupted(
            f"stopped by {signal.Signals(signum).name} at step {self.step} (epoch "
            f"{self.epoch + 1}); the checkpoint is in {self.ckpt_root}. To continue, run the same "
            "command again (train and finetune: add --resume)",
            signum,
            self.dist.is_main,
        )

    def _check_in_sync(self) -> float:
        """All processes must hold the same weights; returns the (shared) weight checksum."""
        checksum = torch.stack([p.detach().double().sum() for p in self.model.parameters()]).sum()
        if not self.dist.enabled:
            return float(checksum)
        gathered = [torch.zeros_like(checksum) for _ in range(self.dist.world_size)]
        torch.distributed.all_gather(gathered, checksum.to(self.device))
        values = [float(g) for g in gathered]
        if max(values) - min(values) > 1e-6 * max(1.0, abs(values[0])):
            raise RuntimeError(f"DDP processes have diverged: weight checksums {values}")
        return values[0]

    def _epoch_sums(
        self, loss_sum: float, correct: int, seen: int, skipped: int
    ) -> tuple[float, int, int, int]:
        """The epoch's sums over every process (each saw its share of the data, and of the
        broken files); on the device: nccl reduces CUDA tensors only."""
        if not self.dist.enabled:
            return loss_sum, correct, seen, skipped
        mine = [loss_sum, float(correct), float(seen), float(skipped)]
        totals = distributed.all_reduce_sum(
            torch.tensor(mine, dtype=torch.float64, device=self.device), self.dist
        ).tolist()
        return totals[0], int(totals[1]), int(totals[2]), int(totals[3])

    def _end_epoch(
        self, loss_sum: float, correct: int, seen: int, seconds: float, skipped_before: int = 0
    ) -> None:
        now = time.monotonic()
        # Sums from before a mid-epoch resume are the main process's to carry (see try_resume).
        skipped = self.data.skipped_images() + skipped_before
        loss_sum, correct_f, seen_f, skipped = self._epoch_sums(loss_sum, correct, seen, skipped)
        self.epoch += 1
        self.batch_in_epoch = 0
        row: dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.scheduler.get_last_lr()[0],
            "train_loss": loss_sum / max(seen_f, 1),
            # multi-label: images with every class right at the threshold
            "train_exact" if self.label_table is not None else "train_top1": (
                100.0 * correct_f / max(seen_f, 1)
            ),
            "epoch_seconds": seconds,
            "images_per_second": seen_f / max(seconds, 1e-9),
            "weight_checksum": self._check_in_sync(),
            "world_size": self.dist.world_size,
        }
        if skipped:
            row["skipped_images"] = int(skipped)
        last = self.step >= self.total_iters
        check_finite_weights(self.model, self.step, self.ckpt_root)
        if self.epoch % self.recipe.eval_every == 0 or last:
            for name, summary in self.evaluate().items():
                row[f"{name}_loss"] = summary["loss"]
                for key in self._row_scores:
                    row[f"{name}_{key}"] = summary[key]
        self._name_skipped_files()  # after the evaluation: its broken files too
        if f"val_{self.score}" in row:
            # mAP is None when no validation image has a class: it counts as 0
            self._track_best(row[f"val_{self.score}"] or 0.0, row["val_loss"])
            row[f"best_val_{self.score}"] = self.best_top1
        self.history.append(row)
        self.runlog.append(row)
        line = epoch_line(
            row,
            epochs=self.epochs,
            total_iters=self.total_iters,
            iters_per_epoch=self.iters_per_epoch,
            pace_from=self.pace_from,
            now=now,
            seconds=seconds,
        )
        self._log(line)

    @property
    def _row_scores(self) -> tuple[str, ...]:
        """What each evaluated split adds to a metrics row (besides its loss)."""
        return row_scores(self.label_table is not None)

    def _track_best(self, top1: float, loss: float) -> None:
        """Better: a higher validation top-1 (multi-label: mAP), or the same with a lower loss
        (on a few dozen images top-1 moves in coarse steps and ties are common)."""
        recipe = self.recipe
        if top1 > self.best_top1 or (top1 == self.best_top1 and loss < self.best_loss):
            self.best_top1 = top1
            self.best_loss = loss
            self.evals_since_best = 0
            if recipe.select_best:
                source = self.ema.module if self.ema is not None else self.model
                self.best_weights = state_dict_for_save(source)
            return
        self.evals_since_best += 1
        if recipe.early_stop_patience and self.evals_since_best >= recipe.early_stop_patience:
            self.stopped_early = True
            what = "mAP" if self.score == "map" else "top-1"
            self._log(
                f"early stop: validation {what} (or, at equal {what}, its loss) has not "
                f"improved for {plural(self.evals_since_best, 'evaluation')} (best "
                f"{self.best_top1:.2f}%)"
            )

    def _finished_before(self) -> bool:
        """A resume that trained no step, of a run whose model directory is whole: that
        directory is the finished run's, perhaps edited since (classes renamed, a calibration
        added), and is not written again."""
        if not self.spec.resume or self.step != self._resumed_at:
            return False
        try:
            read_model_meta(self.out / "model")
        except (OSError, ValueError):
            return False  # stopped while writing it: write it now
        return True

    def _finish(self) -> TrainResult:
        final_model: ResNet = self.ema.module if self.ema is not None else self.model  # type: ignore[assignment]
        if self.recipe.select_best and self.best_weights is not None:
            final_model.load_state_dict(self.best_weights)
        results = self.evaluate(curves=True)
        self._name_skipped_files()
        metrics = self._final_metrics(results)
        model_dir = self.out / "model"
        if self.dist.is_main and self._finished_before():
            self._log(f"{model_dir} kept as it was")
        elif self.dist.is_main:
            write_model_output(self, final_model, model_dir, metrics, results)
        distributed.barrier(self.dist)
        distributed.cleanup(self.dist)
        return TrainResult(
            self.out, self.dist.is_main, model_dir, metrics, self.history, self.signals.signum
        )

    def _final_metrics(self, results: dict[str, Any]) -> dict[str, Any]:
        """What the model directory and final_metrics.json report: each evaluated split's
        scores and loss, the training time, the steps and whether the run stopped early."""
        scores = self._row_scores + (("macro_f1",) if self.label_table is not None else ())
        metrics: dict[str, Any] = {
            f"{name}_{key}": summary[key]
            for name, summary in results.items()
            for key in (*scores, "loss")
        }
        metrics["train_seconds"] = self.train_seconds
        metrics["steps"] = self.step
        metrics["stopped_early"] = self.stopped_early
        return metrics


def train(spec: TrainSpec) -> TrainResult:
    """Train (or resume) a model as ``spec`` says; see :class:`TrainSpec`.

    The run seeds torch's random number generators and may set its thread count and
    deterministic mode (the recipe's ``seed``, ``num_threads``, ``deterministic``); the
    caller's are put back afterwards, so a notebook that trains goes on with its own random
    stream and settings. (:class:`Trainer` used directly leaves them as the run set them.)
    """
    with _callers_torch_state():
        return Trainer(spec).run()


@contextlib.contextmanager
def _callers_torch_state() -> Iterator[None]:
    """Restore torch's RNG states (CPU, and CUDA devices already in use), thread count and
    deterministic-algorithms mode on exit."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
