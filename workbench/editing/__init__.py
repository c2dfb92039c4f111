"""Weight edits (ROME) on a loaded model: the rank-one update, its key statistics, and an
edit stack whose undo and redo restore the weights bit for bit. Qt-free."""

from .edits import EditStack, RomeEdit, load_edit, save_edit, save_edited_model
from .target import MlpOutput, mlp_output

__all__ = ["EditStack", "MlpOutput", "RomeEdit", "load_edit", "mlp_output", "save_edit", "save_edited_model"]
