"""Hugging Face checkpoint interop: declarative key maps, checkpoint files, hub resolution."""

from pathlib import Path

from plmkit.interop.hf_bert import convert_from_hf, convert_to_hf, detect_architecture, load_pretrained, save_pretrained
from plmkit.interop.hub import resolve_model_dir


def model_family(model_dir: Path) -> str:
    """Which plmkit family loads a Hugging Face directory, by its config's model_type: "decoder" (GPT-2, Llama and
    the other decoder formats), "seq2seq" (T5, BART) or "encoder" (BERT and anything else)."""
    from plmkit.interop.checkpoint import read_hf_config_dict
    from plmkit.interop.hf_decoder import FORMATS
    from plmkit.interop.hf_seq2seq import FORMATS as SEQ2SEQ_FORMATS

    model_type = read_hf_config_dict(model_dir).get("model_type")
    return "decoder" if model_type in FORMATS else "seq2seq" if model_type in SEQ2SEQ_FORMATS else "encoder"


__all__ = ["convert_from_hf", "convert_to_hf", "detect_architecture", "load_pretrained", "model_family",
           "resolve_model_dir", "save_pretrained"]
