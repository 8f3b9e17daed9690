"""lm: next-word prediction with stacked LSTM language models.

    import lm
    corpus = lm.load_corpus(["corpus.txt"])
    result = lm.train(corpus, out="checkpoints/demo")
    model, tokenizer = lm.load("checkpoints/demo")
"""
from .checkpoint import Checkpoint, load, load_checkpoint, newest_checkpoint, save_checkpoint
from .corpus import Corpus, load_corpus
from .errors import CheckpointError, ConfigError, CorpusError, LMError, NoCheckpointError, TokenizerError, TrainingDiverged
from .evaluate import EvalConfig, EvalResult, LossMetrics, evaluate_loss, evaluate_paths, evaluate_text
from .keyboard import KeyboardMetrics, keyboard_metrics
from .model import LanguageModel, ModelConfig, detach_state
from .sampler import GenerationConfig, Sampler, generate
from .suggest import SuggestConfig, Suggester, Suggestion, SuggestionSession, suggest_words
from .tokenizer import Tokenizer, TokenizerConfig, load_tokenizer, train_tokenizer
from .trainer import Progress, TrainConfig, TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "Corpus",
    "CorpusError",
    "EvalConfig",
    "EvalResult",
    "GenerationConfig",
    "KeyboardMetrics",
    "LMError",
    "LanguageModel",
    "LossMetrics",
    "ModelConfig",
    "NoCheckpointError",
    "Progress",
    "Sampler",
    "SuggestConfig",
    "Suggester",
    "Suggestion",
    "SuggestionSession",
    "Tokenizer",
    "TokenizerConfig",
    "TokenizerError",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "detach_state",
    "evaluate_loss",
    "evaluate_paths",
    "evaluate_text",
    "generate",
    "keyboard_metrics",
    "load",
    "load_checkpoint",
    "load_corpus",
    "load_tokenizer",
    "newest_checkpoint",
    "save_checkpoint",
    "suggest_words",
    "train",
    "train_tokenizer",
]
