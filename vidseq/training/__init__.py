"""Training, evaluation and checkpoints: feature stores -> sequences -> a trained temporal model.

Place in the data flow: ``features`` (stores) -> **training** -> checkpoints for ``predict``,
``tracking`` and ``pipeline``. Modules, lowest first (each imports only those before it):
``distributed`` (process groups for DDP), ``sequences`` (stores -> split, augmented, batched
sequences), ``checkpoint`` (what a checkpoint holds; save, load, the stores it names),
``evaluate`` (metrics and reports of a checkpoint or model), ``optim`` (the model, optimizer,
schedule and loss of a run), ``weights`` (late fusion: stream
weights chosen on val), ``runs`` (the run folder: reports, config, refusing to overwrite), and
``train`` (the loop, single-stream, fused and DDP).
"""

from vidseq.training.checkpoint import CheckpointError
from vidseq.training.evaluate import EvalResult, evaluate
from vidseq.training.sequences import SequenceSet, assign_splits, load_sequences
from vidseq.training.train import TrainResult, train

__all__ = [
    "CheckpointError",
    "EvalResult",
    "SequenceSet",
    "TrainResult",
    "assign_splits",
    "evaluate",
    "load_sequences",
    "train",
]
