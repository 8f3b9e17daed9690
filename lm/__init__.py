"""lm: next-word prediction with stacked LSTM language models.

    import lm
    corpus = lm.load_corpus(["corpus.txt"])
    result = lm.train(corpus, out="checkpoints/demo")
    predictor = lm.load("checkpoints/demo")     # model, tokenizer, lexicon, cache, n-gram
    print(lm.Suggester.load(predictor).suggest("the clouds are in the"))

Names are imported from their modules when first used, so `import lm` is cheap and a command
that only suggests never loads the trainer.
"""
from importlib import import_module

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "mix.adapt": ["adapted_nll"],
    "mix.config": ["AdaptConfig", "CacheConfig", "NgramConfig"],
    "checkpoint.loader": ["Predictor", "load"],
    "checkpoint.store": ["Checkpoint", "load_checkpoint", "newest_checkpoint", "save_checkpoint"],
    "data.corpus": ["Corpus", "load_corpus"],
    "errors": ["CheckpointError", "ConfigError", "CorpusError", "DistributedError", "ExportError", "LMError", "NoCheckpointError",
               "TokenizerError", "TrainingDiverged"],
    "evaluate.config": ["EvalConfig"],
    "evaluate.evaluation": ["EvalResult", "evaluate_paths", "evaluate_text"],
    "export.onnx": ["ExportResult", "export_checkpoint"],
    "evaluate.keyboard": ["KeyboardMetrics", "keyboard_metrics"],
    "data.lexicon": ["Lexicon"],
    "model.likelihood": ["LossMetrics", "evaluate_loss"],
    "model.config": ["ModelConfig"],
    "model.network": ["LanguageModel"],
    "model.state": ["detach_state"],
    "mix.ngram": ["Ngram"],
    "training.presets": ["SIZES", "apply_size"],
    "suggest.config": ["GenerationConfig", "SuggestConfig"],
    "suggest.sampler": ["Sampler", "generate"],
    "suggest.engine": ["Suggester"],
    "suggest.keyboard": ["Keyboard", "KeyboardSession", "suggest_text", "suggest_words"],
    "suggest.session": ["SuggestionSession"],
    "suggest.typed": ["Suggestion"],
    "data.config": ["TokenizerConfig"],
    "data.tokenizer": ["Tokenizer", "load_tokenizer", "train_tokenizer"],
    "training.config": ["Stop", "TrainConfig"],
    "training.progress": ["Progress", "TrainResult"],
    "training.trainer": ["train"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name in _MODULE_OF:
        value = getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    if not name.startswith("_"):  # lm.training and the other stages, as after `import lm.training`
        try:
            return import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module 'lm' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
