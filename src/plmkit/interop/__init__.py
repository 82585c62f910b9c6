"""Hugging Face checkpoint interop: declarative key maps, checkpoint files, hub resolution."""

from plmkit.interop.hf_bert import convert_from_hf, convert_to_hf, detect_architecture, load_pretrained, save_pretrained
from plmkit.interop.hub import resolve_model_dir

__all__ = ["convert_from_hf", "convert_to_hf", "detect_architecture", "load_pretrained", "resolve_model_dir",
           "save_pretrained"]
