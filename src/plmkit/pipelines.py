"""`plmkit.pipeline(task, model=DIR)`: a model directory to predictions in one line, as Hugging Face's `pipeline`.

    clf = plmkit.pipeline("text-classification", model="out/sst2")
    clf("a charming and often affecting journey")          # {"label": "1", "score": 0.98}
    qa = plmkit.pipeline("question-answering", model="out/squad")
    qa(question="Who?", context="...")                       # {"answer", "score", "start", "end"}

The model and tokenizer come from one plmkit/Hugging Face directory (`from_pretrained`, `load_tokenizer`); the head
class is the one its weights and config `architectures` name. One input gives one result, a list gives a list.
The task pipelines predict through the task objects of `plmkit.tasks`, so a pipeline and `task.predict` agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from plmkit.errors import PlmkitError
from plmkit.similarity import mean_pooling


class Pipeline:
    """A model and its tokenizer in eval mode on one device. Subclasses name the head classes they can use."""

    task: ClassVar[str] = ""
    architectures: ClassVar[tuple[str, ...]] = ()  # accepted checkpoint architectures; () accepts any (bare encoder)
    load_as: ClassVar[str | None] = None  # the class to load an accepted checkpoint as; None: its own

    def __init__(self, model: Any, tokenizer: Any, device: str | torch.device | None = None, **options: Any) -> None:
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        self.tokenizer = tokenizer
        self.options = options

    @property
    def device(self) -> torch.device:
        return self.model.device

    @classmethod
    def load(cls, name_or_path: str | Path, tokenizer: Any = None, device: Any = None, **options: Any) -> Pipeline:
        from plmkit.data.tokenizer import load_tokenizer
        from plmkit.interop import detect_architecture, resolve_model_dir
        from plmkit.models.bert import MODEL_CLASSES, BertModel

        model_dir = resolve_model_dir(name_or_path)
        architecture = detect_architecture(model_dir)
        if cls.architectures and architecture not in cls.architectures:
            raise PlmkitError(f"{model_dir} holds a {architecture}; {cls.task} needs "
                              f"{' or '.join(cls.architectures)} (fine-tune or pretrain one first)")
        if cls.architectures:
            model = MODEL_CLASSES[cls.load_as or architecture].from_pretrained(model_dir)
        else:
            model = BertModel.from_pretrained(model_dir, add_pooling_layer=False)
        return cls(model, tokenizer or load_tokenizer(model_dir), device, **options)

    def _options(self, overrides: dict[str, Any]) -> dict[str, Any]:
        return {**self.options, **overrides}


def _one_or_many(inputs: Any, single: type | tuple[type, ...]) -> tuple[list[Any], bool]:
    if isinstance(inputs, single):
        return [inputs], True
    if isinstance(inputs, (list, tuple)):
        return list(inputs), False
    kinds = " or ".join(t.__name__ for t in (single if isinstance(single, tuple) else (single,)))
    raise PlmkitError(f"expected a {kinds} or a list of them, got {type(inputs).__name__}")


class TextClassificationPipeline(Pipeline):
    """str, (text, text_pair) or {"text", "text_pair"} -> {"label", "score"} (`top_k=` for the k best)."""

    task = "text-classification"
    architectures = ("BertForSequenceClassification",)

    def __call__(self, inputs: Any, **options: Any) -> Any:
        from plmkit.tasks.classification import ClassificationTask

        if isinstance(inputs, tuple) and len(inputs) == 2 and all(isinstance(t, str) for t in inputs):
            items, single = [inputs], True
        else:
            items, single = _one_or_many(inputs, (str, dict))
        regression = self.model.config.problem_type == "regression" or self.model.config.num_labels == 1
        task = ClassificationTask(self.task, regression=regression)
        results = task.predict(self.model, self.tokenizer, items, **self._options(options))
        return results[0] if single else results


class TokenClassificationPipeline(Pipeline):
    """str -> its entities, aggregated over sub-words and words: {"entity_group", "score",
    "word" (the entity's text), "start", "end" (characters in the string), "word_start", "word_end" (word span)}.
    `char_level=True` tags each character (a Chinese model trained on CLUENER)."""

    task = "token-classification"
    architectures = ("BertForTokenClassification",)

    def __call__(self, inputs: Any, **options: Any) -> Any:
        from plmkit.tasks.token_classification import TokenClassificationTask

        options = self._options(options)
        task = TokenClassificationTask(self.task, char_level=options.pop("char_level", False),
                                       joiner=options.pop("joiner", " "))
        items, single = _one_or_many(inputs, str)
        results = []
        for prediction in task.predict(self.model, self.tokenizer, items, **options):
            results.append([{"entity_group": e["type"], "score": e["score"], "word": e["text"],
                             "start": e.get("char_start"), "end": e.get("char_end"), "word_start": e["start"],
                             "word_end": e["end"]} for e in prediction["entities"]])
        return results[0] if single else results


class QuestionAnsweringPipeline(Pipeline):
    """{"question", "context"} (or question=, context=) -> {"answer", "score", "start", "end"}; long contexts are
    read in overlapping windows (`max_length`, `doc_stride`) and the best span of all windows wins."""

    task = "question-answering"
    architectures = ("BertForQuestionAnswering",)

    def __call__(self, inputs: Any = None, *, question: str | None = None, context: str | None = None,
                 **options: Any) -> Any:
        from plmkit.tasks.question_answering import SquadTask

        if inputs is None:
            if question is None or context is None:
                raise PlmkitError("question-answering needs a question and a context")
            inputs = {"question": question, "context": context}
        items, single = _one_or_many(inputs, dict)
        options = self._options(options)
        task = SquadTask(self.task, max_answer_length=options.pop("max_answer_length", 30))
        results = task.predict(self.model, self.tokenizer, items, **options)
        return results[0] if single else results


class FillMaskPipeline(Pipeline):
    """A text with the mask token -> the `top_k` fillers: [{"score", "token", "token_str", "sequence"}] (a list of
    such lists when the text has several masks)."""

    task = "fill-mask"
    architectures = ("BertForMaskedLM", "BertForPreTraining")
    load_as = "BertForMaskedLM"

    def __call__(self, inputs: Any, top_k: int | None = None) -> Any:
        items, single = _one_or_many(inputs, str)
        top_k = top_k or self.options.get("top_k", 5)
        mask_id = self.tokenizer.mask_token_id
        if mask_id is None:
            raise PlmkitError("the tokenizer has no mask token")
        results = []
        with torch.inference_mode():
            for text in items:
                enc = self.tokenizer(text, truncation=True, return_tensors="pt")
                ids = enc["input_ids"][0]
                positions = (ids == mask_id).nonzero().flatten().tolist()
                if not positions:
                    raise PlmkitError(f"no {self.tokenizer.mask_token} in {text!r}")
                logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits[0].float().cpu()
                per_mask = []
                for position in positions:
                    probs, token_ids = logits[position].softmax(-1).topk(top_k)
                    fills = []
                    for prob, token_id in zip(probs.tolist(), token_ids.tolist(), strict=True):
                        filled = ids.clone()
                        filled[position] = token_id
                        fills.append({"score": prob, "token": token_id,
                                      "token_str": self.tokenizer.decode([token_id]),
                                      "sequence": self.tokenizer.decode(filled)})
                    per_mask.append(fills)
                results.append(per_mask[0] if len(per_mask) == 1 else per_mask)
        return results[0] if single else results


class FeatureExtractionPipeline(Pipeline):
    """Texts -> features from the bare encoder. pooling="mean" (default): one vector per text, the average of its
    real tokens, (C,) for a str and (N, C) for a list (`normalize=True` for unit length); pooling="cls": the [CLS]
    vector; pooling="none": each text's token vectors, (T, C) per text."""

    task = "feature-extraction"
    poolings = ("mean", "cls", "none")

    def __call__(self, inputs: Any, **options: Any) -> Any:
        items, single = _one_or_many(inputs, str)
        options = self._options(options)
        pooling, normalize = options.get("pooling", "mean"), options.get("normalize", False)
        if pooling not in self.poolings:
            raise PlmkitError(f"unknown pooling {pooling!r}; choose from: {', '.join(self.poolings)}")
        features = self.embed(items, pooling, normalize, options.get("batch_size", 32), options.get("max_length"))
        if pooling == "none":
            return features[0] if single else features
        return features[0] if single else torch.stack(features)

    def embed(self, texts: Sequence[str], pooling: str = "mean", normalize: bool = False, batch_size: int = 32,
              max_length: int | None = None) -> list[torch.Tensor]:
        """One tensor per text: (C,) pooled, or (T, C) with pooling="none"."""
        out: list[torch.Tensor] = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                enc = self.tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                                     max_length=max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state.float()  # (B, T, C)
                mask = enc["attention_mask"]
                if pooling == "none":
                    out.extend(h[m.bool()].cpu() for h, m in zip(hidden, mask, strict=True))
                    continue
                pooled = mean_pooling(hidden, mask) if pooling == "mean" else hidden[:, 0]
                out.extend((F.normalize(pooled, dim=-1) if normalize else pooled).cpu())
        return out


class SentenceSimilarityPipeline(FeatureExtractionPipeline):
    """(source_sentence, sentences) or {"source_sentence", "sentences"} -> the cosine similarity of each sentence
    to the source, of mean-pooled embeddings (the sentence-transformers recipe)."""

    task = "sentence-similarity"

    def __call__(self, inputs: Any, sentences: Sequence[str] | None = None, **options: Any) -> list[float]:
        if isinstance(inputs, dict):
            inputs, sentences = inputs.get("source_sentence"), inputs.get("sentences")
        if not isinstance(inputs, str) or not sentences or not all(isinstance(s, str) for s in sentences):
            raise PlmkitError("sentence-similarity needs a source sentence and a non-empty list of sentences")
        options = self._options(options)
        vectors = torch.stack(self.embed([inputs, *sentences], "mean", True, options.get("batch_size", 32),
                                         options.get("max_length")))
        return (vectors[1:] @ vectors[0]).tolist()


class Text2TextGenerationPipeline(Pipeline):
    """str (or a list) -> {"generated_text"} from an encoder-decoder (T5, BART, or one trained with a plmkit
    text2text task); generation options (`num_beams`, `max_new_tokens`, `length_penalty`, ...) as call options.
    "translation" and "summarization" are the same pipeline with HF's output keys."""

    task = "text2text-generation"
    output_key = "generated_text"

    @classmethod
    def load(cls, name_or_path: str | Path, tokenizer: Any = None, device: Any = None,
             **options: Any) -> Pipeline:
        from plmkit.data.tokenizer import load_tokenizer
        from plmkit.interop import resolve_model_dir
        from plmkit.models.encoder_decoder import Seq2SeqLM

        model_dir = resolve_model_dir(name_or_path)
        if not is_seq2seq_dir(model_dir):
            raise PlmkitError(f"{model_dir} holds no encoder-decoder (T5 or BART); {cls.task} needs one")
        return cls(Seq2SeqLM.from_pretrained(model_dir), tokenizer or load_tokenizer(model_dir), device, **options)

    def __call__(self, inputs: Any, **options: Any) -> Any:
        from plmkit.tasks.text2text import Text2TextTask

        items, single = _one_or_many(inputs, (str, dict))
        options = self._options(options)
        batch_size = options.pop("batch_size", 32)
        task = Text2TextTask(self.task, format="jsonl", output_key=self.output_key)
        results = task.predict(self.model, self.tokenizer, items, batch_size=batch_size, **options)
        return results[0] if single else results


class TranslationPipeline(Text2TextGenerationPipeline):
    task = "translation"
    output_key = "translation_text"


class SummarizationPipeline(Text2TextGenerationPipeline):
    task = "summarization"
    output_key = "summary_text"


def is_seq2seq_dir(model_dir: Path) -> bool:
    """Whether a model directory holds an encoder-decoder (its config's model_type is t5 or bart)."""
    from plmkit.interop import model_family

    return model_family(model_dir) == "seq2seq"


PIPELINES: dict[str, type[Pipeline]] = {
    "text-classification": TextClassificationPipeline,
    "sentiment-analysis": TextClassificationPipeline,
    "token-classification": TokenClassificationPipeline,
    "ner": TokenClassificationPipeline,
    "question-answering": QuestionAnsweringPipeline,
    "fill-mask": FillMaskPipeline,
    "feature-extraction": FeatureExtractionPipeline,
    "sentence-similarity": SentenceSimilarityPipeline,
    "text2text-generation": Text2TextGenerationPipeline,
    "translation": TranslationPipeline,
    "summarization": SummarizationPipeline,
}


def pipeline(task: str, model: str | Path | Any, tokenizer: Any = None, device: str | torch.device | None = None,
             **options: Any) -> Pipeline:
    """A ready-to-call pipeline for `task` on the model directory (or hub id) `model`.

    `model` may also be a model object, then `tokenizer` is required. `options` become the call defaults, e.g.
    `top_k=3`, `max_length=256`, `pooling="cls"`.
    """
    if task not in PIPELINES:
        raise PlmkitError(f"unknown pipeline task {task!r}; choose from: {', '.join(sorted(PIPELINES))}")
    cls = PIPELINES[task]
    if isinstance(model, (str, Path)):
        return cls.load(model, tokenizer, device, **options)
    if tokenizer is None:
        raise PlmkitError(f"{task}: pass the tokenizer with a model object (or pass a model directory)")
    return cls(model, tokenizer, device, **options)
