"""TensorBoard event files in a run's workdir (`tensorboard --logdir runs/`),
written with tensorboardX: no TensorFlow in the training process."""

from __future__ import annotations

from typing import Mapping

import numpy as np
from tensorboardX import SummaryWriter

# Tag of the epoch-end 10x10 sample grid.
GRID_TAG = "samples"


def tag(name: str) -> str:
    """The TensorBoard tag of a metrics.jsonl field, grouped so the scalars
    page shows one section each: `loss/g_loss`, `quality/fd_ratio_ema`,
    `train/lr`, `train/img_per_s`."""
    if "loss" in name:
        return f"loss/{name}"
    if name.startswith(("cond_acc", "fd_ratio")):
        return f"quality/{name}"
    return f"train/{name}"


class Summaries:
    """Scalars (tagged by `tag`) and sample grids of one training process."""

    def __init__(self, workdir: str, start_step: int):
        # A run stopped hard may have logged past its last checkpoint. The
        # resumed run repeats those steps; purge_step tells TensorBoard to drop
        # the old events from that step on, so curves go on without duplicates.
        self._writer = SummaryWriter(workdir, purge_step=start_step + 1 if start_step
                                     else None)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self._writer.add_scalar(tag(name), value, step)

    def grid(self, step: int, image: np.ndarray) -> None:
        """A grid picture, uint8 `[H, W]`."""
        self._writer.add_image(GRID_TAG, image, step, dataformats="HW")

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
