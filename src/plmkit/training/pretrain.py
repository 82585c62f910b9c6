"""A pretraining run from one recipe: tokenizer → prepared corpus → model + objective → Hugging Face directory.

The model decides the objective (architectures are data; there is no separate switch to contradict it):

    a BERT encoder (neither field below)   masked LM [+ NSP] on BERT examples (`plmkit.data.pretraining`)
    `causal: true` (a decoder)             causal LM on full-length chunks of the packed token stream, documents
                                           joined by the end-of-text token (`plmkit.data.packed`)
    `is_encoder_decoder: true`             T5 span corruption of packed chunks (`plmkit.data.denoising`)

A recipe (`configs/pretrain/*.yaml`) has five sections:

    model      a model config file (`configs/models/bert-mini.yaml`), `file:` plus fields to change, or the fields
               inline; inline fields may start from `style:` gpt2 or llama (`decoder_config`), t5 or bart
               (`seq2seq_config`). `vocab_size` and the special ids (pad, bos, eos, decoder start) follow the
               tokenizer; a T5's decoder starts from pad, a BART's from eos, as their styles say. Or
               `from_pretrained:` a Hugging Face BERT, GPT-2/Llama or T5/BART directory (or hub id) to continue
               pretraining it (domain- or task-adaptive pretraining): its weights, config and tokenizer are kept,
               heads it lacks start fresh, and the tokenizer section may only give `path`.
    tokenizer  `path:` an existing tokenizer directory, or `vocab_size:` (+ `min_frequency`) to train one on the
               training text first: WordPiece for BERT (+ `lowercase`), a GPT-2 byte-level BPE with <|endoftext|>
               for a decoder, a byte-level BPE with <pad> </s> <unk> (ids 0, 1, 2) and the sentinels <extra_id_0>
               ... <extra_id_99> (ids 3 ... 102) for an encoder-decoder.
    data       `inputs:` raw text (files, folders, globs, .gz, JSONL) prepared into <output_dir>/data, or
               `prepared:` a `plmkit prepare` directory; `doc_boundary`, `encoding_errors`, `validation_fraction`,
               `workers`, `eval_batch_size` and `max_seq_length`: BERT's example length, a decoder's chunk
               length, an encoder-decoder's corrupted input length (eos included; T5's 512 corrupts 568-token
               chunks into 114-token targets). BERT only: `nsp`, `short_seq_prob`, `mlm_probability`,
               `whole_word`. Span corruption only: `noise_density` (0.15), `mean_noise_span_length` (3).
    train      `TrainConfig` (steps, minutes, batch, lr, schedule, checkpoints, evaluation; `label_smoothing` of
               the span-corruption loss)
    impl       `ImplConfig` (device, precision, compile, threads, progress bar, TensorBoard)

Held-out evaluation: masked-LM loss, perplexity and accuracy (+ NSP accuracy) for BERT; loss and perplexity per
target token for the others, from running sums. Paths may use `$PLMKIT_DATA` (default `../shared/data`). The run ends
with `<output_dir>/model`: config.json, model.safetensors and the tokenizer, which `transformers` loads as
BertForPreTraining, GPT2LMHeadModel / LlamaForCausalLM or T5ForConditionalGeneration / BartForConditionalGeneration.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plmkit.config import ModelConfig
from plmkit.errors import PlmkitError
from plmkit.training.config import ImplConfig, TrainConfig, dataclass_from_dict, load_recipe
from plmkit.training.data import Collate, iter_eval_batches
from plmkit.training.distributed import DistInfo, all_reduce_sum
from plmkit.training.objectives import CausalLMObjective, Objective, PretrainingObjective, Seq2SeqObjective
from plmkit.training.trainer import Trainer, TrainResult

log = logging.getLogger(__name__)

SECTIONS = ("model", "tokenizer", "data", "train", "impl")
# Recipe keys that only one objective reads: set for another, they are an error rather than silently ignored.
ONLY_FOR = {("data", "nsp"): "masked_lm", ("data", "short_seq_prob"): "masked_lm",
            ("data", "mlm_probability"): "masked_lm", ("data", "whole_word"): "masked_lm",
            ("tokenizer", "lowercase"): "masked_lm", ("data", "noise_density"): "span_corruption",
            ("data", "mean_noise_span_length"): "span_corruption"}


@dataclass
class DataConfig:
    inputs: list[str] = field(default_factory=list)
    prepared: str | None = None
    doc_boundary: str = "blank_line"
    text_field: str = "text"
    encoding_errors: str = "strict"
    validation_fraction: float = 0.01
    workers: int | None = None
    max_seq_length: int = 128
    nsp: bool = True
    short_seq_prob: float = 0.1
    mlm_probability: float = 0.15
    whole_word: bool = False
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.inputs, str):
            self.inputs = [self.inputs]
        if not self.inputs and not self.prepared:
            raise PlmkitError("data: give `inputs` (raw text to prepare) or `prepared` (a `plmkit prepare` directory)")
        if not 8 <= self.max_seq_length:
            raise PlmkitError(f"data.max_seq_length must be at least 8, got {self.max_seq_length}")
        if not 0.0 < self.noise_density < 1.0:
            raise PlmkitError(f"data.noise_density must be in (0, 1), got {self.noise_density}")
        if not self.mean_noise_span_length >= 1.0:
            raise PlmkitError(f"data.mean_noise_span_length must be at least 1, got {self.mean_noise_span_length}")


@dataclass
class TokenizerConfig:
    path: str | None = None
    vocab_size: int = 30522
    lowercase: bool = True
    min_frequency: int = 2


def expand_path(value: str) -> str:
    """`$PLMKIT_DATA/...` → the data folder ($PLMKIT_DATA, default ../shared/data); other variables and ~ too."""
    from plmkit.tasks.base import default_data_dir

    root = str(default_data_dir())
    value = value.replace("${PLMKIT_DATA}", root).replace("$PLMKIT_DATA", root)
    return os.path.expanduser(os.path.expandvars(value))


def pretrained_dir(section: Any) -> Path | None:
    """The checkpoint directory of a `model: {from_pretrained: DIR}` section (a hub id is fetched), else None."""
    if not isinstance(section, dict) or "from_pretrained" not in section:
        return None
    clash = sorted({"file", "style"} & set(section))
    if clash:
        raise PlmkitError(f"model: give `from_pretrained` alone or with fields to change, not with "
                          f"{' or '.join(map(repr, clash))} (e.g. the override 'model={{from_pretrained: DIR}}' "
                          "replaces a recipe's model file)")
    source = section["from_pretrained"]
    if not isinstance(source, str) or not source:
        raise PlmkitError("model.from_pretrained: give a Hugging Face model directory or hub id")
    from plmkit.interop.hub import resolve_model_dir

    return resolve_model_dir(expand_path(source))


def pretrained_config(model_dir: Path) -> ModelConfig:
    """A checkpoint's config, read by its model_type: BERT, GPT-2/Llama or T5/BART."""
    from plmkit.interop import model_family
    from plmkit.interop.checkpoint import read_config
    from plmkit.interop.hf_decoder import read_decoder_config
    from plmkit.interop.hf_seq2seq import read_seq2seq_config

    family = model_family(model_dir)
    if family == "decoder":
        return read_decoder_config(model_dir)[0]
    if family == "seq2seq":
        return read_seq2seq_config(model_dir)[0]
    return read_config(model_dir)


def load_pretrained_weights(model: nn.Module, model_dir: Path) -> None:
    """Copy a checkpoint's weights into the freshly built pretraining model; heads it lacks (an MLM or NSP head on a
    sentence-embedding BERT) keep their fresh initialisation, as `transformers` does. Other gaps are errors."""
    from plmkit.interop import hf_bert, hf_decoder, hf_seq2seq
    from plmkit.interop.checkpoint import read_state_dict

    state, source = read_state_dict(model_dir)
    config = model.config
    if config.is_encoder_decoder:
        hf_seq2seq.convert_from_hf(model, state, hf_seq2seq.read_seq2seq_config(model_dir)[1], source)
    elif config.causal:
        hf_decoder.convert_from_hf(model, state, hf_decoder.read_decoder_config(model_dir)[1], source)
    else:
        new_init = hf_bert.convert_from_hf(model, state, source)
        if new_init:
            log.warning("%s: newly initialised (not in %s): %s", type(model).__name__, model_dir,
                        ", ".join(sorted({k.rsplit(".", 1)[0] for k in new_init})))


def model_config_from(section: Any, init_dir: Path | None = None) -> ModelConfig:
    """The model section: a config file, `file:` + fields to change, inline fields (optionally on a `style:`), or
    `from_pretrained:` a Hugging Face directory (+ fields to change, e.g. dropout) to continue pretraining.
    `init_dir`: that directory when the caller has already resolved it (a hub id is then not looked up again)."""
    if isinstance(section, str):
        return ModelConfig.from_file(expand_path(section))
    if not isinstance(section, dict):
        raise PlmkitError("model: give a model config file or the model fields")
    fields = dict(section)
    init_dir = init_dir or pretrained_dir(fields)
    if init_dir is not None:
        fields.pop("from_pretrained")
        return pretrained_config(init_dir).replace(**fields) if fields else pretrained_config(init_dir)
    style = fields.pop("style", None)
    if "file" in fields:
        if style is not None:
            raise PlmkitError("model: give `style` with inline fields, not with `file` (a file holds every field)")
        return ModelConfig.from_file(expand_path(fields.pop("file"))).replace(**fields)
    if style is None:
        return ModelConfig.from_dict(fields, source="model")
    from plmkit.models.decoder import DECODER_STYLES, decoder_config
    from plmkit.models.encoder_decoder import SEQ2SEQ_STYLES, seq2seq_config

    builders = {**dict.fromkeys(DECODER_STYLES, decoder_config), **dict.fromkeys(SEQ2SEQ_STYLES, seq2seq_config)}
    if not isinstance(style, str) or style not in builders:
        raise PlmkitError(f"model.style: unknown style {style!r}; choose from: {', '.join(builders)}")
    known = {f.name for f in dataclasses.fields(ModelConfig) if f.init}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise PlmkitError(f"model: unknown key(s) {', '.join(map(repr, unknown))}; known keys: style, "
                          f"{', '.join(sorted(known))}")
    return builders[style](style, **fields)


def objective_of(config: ModelConfig) -> str:
    """'span_corruption' for an encoder-decoder, 'causal_lm' for a decoder, else 'masked_lm' (BERT)."""
    return "span_corruption" if config.is_encoder_decoder else "causal_lm" if config.causal else "masked_lm"


def check_recipe_keys(recipe: dict[str, Any], objective: str) -> None:
    for (section, key), only in ONLY_FOR.items():
        if isinstance(recipe.get(section), dict) and key in recipe[section] and only != objective:
            raise PlmkitError(f"{section}.{key} applies to {only} pretraining only; this recipe's model makes it "
                              f"{objective} (a decoder: causal_lm, an encoder-decoder: span_corruption)")


def mlm_evaluator(dataset: Any, collate: Collate, batch_size: int, max_batches: int | None,
                  dist: DistInfo) -> Callable[[nn.Module], dict[str, float]]:
    """Held-out masked-LM loss, perplexity and accuracy (and NSP accuracy): running sums, never all logits.
    The masks are fixed per example, so every evaluation scores the same positions."""

    def evaluate(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        sums = torch.zeros(5, dtype=torch.float64)  # mlm loss sum, masked tokens, correct, nsp correct, pairs
        for batch in iter_eval_batches(dataset, collate, batch_size, max_batches=max_batches, rank=dist.rank,
                                       world_size=dist.world_size):
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch, masked_only=True)
            targets = batch["labels"][batch["labels"] != -100]
            if len(targets):
                sums[0] += float(out.mlm_loss) * len(targets)
                sums[1] += len(targets)
                sums[2] += int((out.prediction_logits.argmax(-1) == targets).sum())
            if "next_sentence_label" in batch:
                sums[3] += int((out.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).sum())
                sums[4] += len(batch["next_sentence_label"])
        sums = all_reduce_sum(sums, dist)
        if sums[1] == 0:
            raise PlmkitError("the validation split has no masked tokens to evaluate; give it more text")
        mlm_loss = float(sums[0] / sums[1])
        metrics = {"mlm_loss": mlm_loss, "perplexity": math.exp(min(mlm_loss, 50.0)),
                   "mlm_accuracy": float(sums[2] / sums[1])}
        if sums[4]:
            metrics["nsp_accuracy"] = float(sums[3] / sums[4])
        return metrics

    return evaluate


def loss_evaluator(dataset: Any, collate: Collate, objective: Objective, batch_size: int, max_batches: int | None,
                   dist: DistInfo) -> Callable[[nn.Module], dict[str, float]]:
    """Held-out loss per target token and its perplexity, from running sums of the objective's single loss term
    (the objectives compute it without holding the logits of a batch). Corruption is seeded per example, so every
    evaluation scores the same targets."""

    def evaluate(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        sums = torch.zeros(2, dtype=torch.float64)  # loss sum, target tokens
        for batch in iter_eval_batches(dataset, collate, batch_size, max_batches=max_batches, rank=dist.rank,
                                       world_size=dist.world_size):
            batch = {k: v.to(device) for k, v in batch.items()}
            count = objective.counts(batch)["loss"]
            if count:
                sums[0] += float(objective(model, batch)["loss"]) * count
                sums[1] += count
        sums = all_reduce_sum(sums, dist)
        if sums[1] == 0:
            raise PlmkitError("the validation split has no target tokens to evaluate; give it more text")
        loss = float(sums[0] / sums[1])
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    return evaluate


def build_tokenizer(cfg: TokenizerConfig, data: DataConfig, output_dir: Path, main: bool,
                    objective: str = "masked_lm", model_max_length: int = 512) -> Path:
    """The tokenizer directory: the given one, or one trained on the training text for `objective` (once; reused on
    resume): WordPiece for masked LM, byte-level BPE for the others (see the module docstring)."""
    if cfg.path:
        path = Path(expand_path(cfg.path))
        if not path.is_dir():
            raise PlmkitError(f"tokenizer.path: directory not found: {path}")
        return path
    path = output_dir / "tokenizer"
    if (path / "tokenizer.json").is_file():
        return path
    if not data.inputs:
        raise PlmkitError("tokenizer: give `path`, or train one from data.inputs (data.prepared alone has no text)")
    if main:
        from plmkit.data.corpus import DocumentReader, expand_inputs
        from plmkit.data.denoising import T5_ROLES, t5_special_tokens
        from plmkit.data.tokenizer_train import train_bytelevel_bpe, train_wordpiece

        reader = DocumentReader(expand_inputs([expand_path(p) for p in data.inputs]), doc_boundary=data.doc_boundary,
                                text_field=data.text_field, encoding_errors=data.encoding_errors)
        kind = "WordPiece" if objective == "masked_lm" else "byte-level BPE"
        log.info("training a %s tokenizer (vocab %d) on %s", kind, cfg.vocab_size, ", ".join(data.inputs))
        if objective == "masked_lm":
            tokenizer = train_wordpiece(None, cfg.vocab_size, texts=iter(reader), lowercase=cfg.lowercase,
                                        min_frequency=cfg.min_frequency)
        elif objective == "causal_lm":
            tokenizer = train_bytelevel_bpe(None, cfg.vocab_size, texts=iter(reader), min_frequency=cfg.min_frequency,
                                            model_max_length=model_max_length)
        else:
            tokenizer = train_bytelevel_bpe(None, cfg.vocab_size, texts=iter(reader), min_frequency=cfg.min_frequency,
                                            special_tokens=t5_special_tokens(), roles=T5_ROLES,
                                            model_max_length=model_max_length)
        tokenizer.save_pretrained(path)
    return path


def build_corpus(data: DataConfig, tokenizer_dir: Path, output_dir: Path, seed: int, main: bool,
                 progress: bool, split_sentences: bool = True) -> Path:
    if data.prepared:
        return Path(expand_path(data.prepared))
    path = output_dir / "data"
    if (path / "meta.json").is_file():
        return path
    if main:
        from plmkit.data.prepare import prepare_corpus

        prepare_corpus([expand_path(p) for p in data.inputs], path, tokenizer_dir,
                       doc_boundary=data.doc_boundary, text_field=data.text_field,
                       encoding_errors=data.encoding_errors, split_sentences=split_sentences,
                       num_workers=data.workers, validation_fraction=data.validation_fraction, seed=seed,
                       progress=progress)
    return path


@dataclass
class Setup:
    """What one objective brings to the trainer: the final config, a model factory, data and loss."""

    config: ModelConfig
    build_model: Callable[[ModelConfig], nn.Module]
    datasets: dict[str, Any]
    collate: Collate
    objective: Objective
    eval_objective: Objective | None = None  # a loss_evaluator's; None: the masked-LM evaluator


def check_positions(config: ModelConfig, data: DataConfig, objective: str) -> None:
    """Sequences must fit the model's positions (T5's relative position bias has no limit); checked before any
    tokenizer training or corpus preparation."""
    length, targets = data.max_seq_length, 0
    if objective == "span_corruption":
        from plmkit.data.denoising import span_corruption_lengths

        targets = span_corruption_lengths(length, data.noise_density, data.mean_noise_span_length)[1]
    if config.position_embedding != "relative" and max(length, targets) > config.max_position_embeddings:
        more = f" (targets of {targets} tokens)" if targets > length else ""
        raise PlmkitError(f"data.max_seq_length {length}{more} exceeds the model's max_position_embeddings "
                          f"{config.max_position_embeddings}")


def masked_lm_setup(config: ModelConfig, tokenizer: Any, corpus: Any, data: DataConfig, train: TrainConfig) -> Setup:
    from plmkit.data.pretraining import PretrainingCollator, PretrainingDataset
    from plmkit.models.bert import BertForPreTraining

    def build(c: ModelConfig) -> nn.Module:
        model = BertForPreTraining(c)
        model.init_weights()
        return model

    datasets = {split: PretrainingDataset(corpus, split, max_seq_length=data.max_seq_length, nsp=data.nsp,
                                          short_seq_prob=data.short_seq_prob, seed=train.seed)
                for split in ("train", "validation")}
    collate = PretrainingCollator(tokenizer, mlm_probability=data.mlm_probability, whole_word=data.whole_word)
    return Setup(config.replace(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id), build, datasets,
                 collate, PretrainingObjective())


def causal_lm_setup(config: ModelConfig, tokenizer: Any, corpus: Any, data: DataConfig, train: TrainConfig) -> Setup:
    from plmkit.data.packed import CausalLMCollator, PackedDataset
    from plmkit.models.decoder import CausalLM

    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if eos is None:
        raise PlmkitError("tokenizer: causal-LM pretraining puts an end-of-text token between documents; this "
                          "tokenizer has no eos (or [SEP]) token")
    config = config.replace(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=eos,
                            pad_token_id=tokenizer.pad_token_id)
    datasets = {split: PackedDataset(corpus, split, data.max_seq_length, eos) for split in ("train", "validation")}
    objective = CausalLMObjective()
    return Setup(config, CausalLM, datasets, CausalLMCollator(), objective, objective)


def span_corruption_setup(config: ModelConfig, tokenizer: Any, corpus: Any, data: DataConfig,
                          train: TrainConfig) -> Setup:
    from plmkit.data.denoising import SpanCorruptionCollator, noise_counts, sentinel_ids, span_corruption_lengths
    from plmkit.data.packed import PackedDataset
    from plmkit.models.encoder_decoder import Seq2SeqLM

    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise PlmkitError("tokenizer: span corruption needs an eos and a pad token (T5: </s> and <pad>)")
    chunk = span_corruption_lengths(data.max_seq_length, data.noise_density, data.mean_noise_span_length)[0]
    sentinels = sentinel_ids(tokenizer)
    needed = noise_counts(chunk, data.noise_density, data.mean_noise_span_length)[1]
    if len(sentinels) < needed:
        raise PlmkitError(f"tokenizer: span corruption of {chunk}-token chunks needs {needed} sentinel tokens "
                          f"(<extra_id_0> ... <extra_id_{needed - 1}>); the tokenizer has {len(sentinels)} (train "
                          "one from the text, or give a T5 tokenizer)")
    collate = SpanCorruptionCollator(sentinels, tokenizer.eos_token_id, tokenizer.pad_token_id, data.noise_density,
                                     data.mean_noise_span_length)
    # The decoder starts from the token that has that role in the style: T5's pad, BART's eos.
    from_eos = config.decoder_start_token_id is not None and config.decoder_start_token_id == config.eos_token_id
    config = config.replace(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                            decoder_start_token_id=tokenizer.eos_token_id if from_eos else tokenizer.pad_token_id)
    datasets = {split: PackedDataset(corpus, split, chunk, tokenizer.eos_token_id)
                for split in ("train", "validation")}
    return Setup(config, Seq2SeqLM, datasets, collate, Seq2SeqObjective(train.label_smoothing), Seq2SeqObjective())


SETUPS = {"masked_lm": masked_lm_setup, "causal_lm": causal_lm_setup, "span_corruption": span_corruption_setup}


def pretrain(recipe: dict[str, Any], resume: bool = False) -> tuple[TrainResult, Path]:
    """Run a pretraining recipe (a mapping with the sections above); returns the result and the model directory."""
    unknown = sorted(set(recipe) - set(SECTIONS))
    if unknown:
        raise PlmkitError(f"recipe: unknown section(s) {', '.join(unknown)}; known sections: {', '.join(SECTIONS)}")
    train_cfg = dataclass_from_dict(TrainConfig, recipe.get("train"), "train")
    impl = dataclass_from_dict(ImplConfig, recipe.get("impl"), "impl")
    data = dataclass_from_dict(DataConfig, recipe.get("data"), "data")
    tok_cfg = dataclass_from_dict(TokenizerConfig, recipe.get("tokenizer"), "tokenizer")
    model_section = recipe.get("model", "configs/models/bert-mini.yaml")
    init_dir = pretrained_dir(model_section)
    model_cfg = model_config_from(model_section, init_dir)
    if init_dir is not None:
        # Continued (domain- or task-adaptive) pretraining keeps the checkpoint's vocabulary: its tokenizer is the
        # default, and training a new one would scramble the embedding rows.
        extra = sorted(set(recipe.get("tokenizer") or {}) - {"path"})
        if extra:
            raise PlmkitError(f"tokenizer.{extra[0]}: model.from_pretrained continues a checkpoint with its own "
                              "vocabulary; give no tokenizer settings (or only tokenizer.path to a tokenizer with "
                              "the same vocabulary)")
        tok_cfg.path = tok_cfg.path or str(init_dir)
    objective = objective_of(model_cfg)
    check_recipe_keys(recipe, objective)
    check_positions(model_cfg, data, objective)
    output_dir = Path(train_cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    from plmkit.data.shards import PreparedCorpus
    from plmkit.data.tokenizer import load_tokenizer
    from plmkit.training.distributed import barrier, init_distributed

    dist = init_distributed("cuda" if impl.device == "cuda" or (impl.device == "auto" and torch.cuda.is_available())
                            else "cpu")
    max_length = model_cfg.max_position_embeddings if objective == "causal_lm" else data.max_seq_length
    tokenizer_dir = build_tokenizer(tok_cfg, data, output_dir, dist.is_main, objective, max_length)
    barrier(dist)
    corpus_dir = build_corpus(data, tokenizer_dir, output_dir, train_cfg.seed, dist.is_main, impl.progress,
                              split_sentences=objective == "masked_lm" and data.nsp)
    barrier(dist)
    tokenizer = load_tokenizer(tokenizer_dir)
    corpus = PreparedCorpus(corpus_dir)
    corpus.check_tokenizer(tokenizer_dir)
    setup = SETUPS[objective](model_cfg, tokenizer, corpus, data, train_cfg)
    if init_dir is not None:
        if len(tokenizer) > model_cfg.vocab_size:
            raise PlmkitError(f"tokenizer {tok_cfg.path}: {len(tokenizer)} tokens, more than the "
                              f"{model_cfg.vocab_size} embedding rows of {init_dir}")
        setup.config = setup.config.replace(vocab_size=model_cfg.vocab_size)  # a padded table keeps its size
    train_data, validation = setup.datasets["train"], setup.datasets["validation"]
    log.info("pretraining %s (%s): %d training and %d validation sequences of up to %d tokens", output_dir, objective,
             len(train_data), len(validation), data.max_seq_length)
    if len(train_data) == 0:
        raise PlmkitError(f"the training split of {corpus_dir} gives no {objective} examples of "
                          f"data.max_seq_length {data.max_seq_length}; give more text or a shorter length")

    torch.manual_seed(train_cfg.seed)
    model = setup.build_model(setup.config)
    if init_dir is not None:
        load_pretrained_weights(model, init_dir)
        log.info("continuing pretraining from %s", init_dir)
    evaluator = None
    if len(validation):
        evaluator = (mlm_evaluator(validation, setup.collate, data.eval_batch_size, train_cfg.eval_max_batches, dist)
                     if setup.eval_objective is None else
                     loss_evaluator(validation, setup.collate, setup.eval_objective, data.eval_batch_size,
                                    train_cfg.eval_max_batches, dist))
    trainer = Trainer(model, train_cfg, train_data=train_data, collate=setup.collate, objective=setup.objective,
                      evaluator=evaluator, impl=impl)
    result = trainer.fit(resume=resume)
    model_dir = output_dir / "model"
    if dist.is_main:
        trainer.model.save_pretrained(model_dir, tokenizer=tokenizer)
        log.info("saved %s (%s parameters) after %d steps", model_dir, f"{model.num_parameters:,}", result.step)
    return result, model_dir


def pretrain_from_file(path: str | Path | None, overrides: list[str] = (), resume: bool = False):
    return pretrain(load_recipe(path, overrides, sections=SECTIONS), resume=resume)
