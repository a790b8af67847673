"""Networks: the VDN (paper §3.1-3.2) and its parts; ``create_model`` is the front door."""

from semivdn.models import vdn
from semivdn.models.builder import MODELS, create_model, register_model
from semivdn.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from semivdn.models.vdn import VDN, VDNOutput

__all__ = ["MODELS", "VDN", "CheckpointError", "VDNOutput", "create_model", "load_checkpoint", "register_model",
           "save_checkpoint", "vdn"]
