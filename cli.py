"""The `lm` command: a thin click layer over the `lm` library.

Each command parses its options (the shared ones are in cli_options.py), calls one library
function and hands the result to cli_render or cli_inference, which draw it with rich. Both the library and cli_render are imported inside the
command that runs: `lm --help` loads neither torch nor rich. The flags are built from the
torch-free config dataclasses (lm/*/config.py), so no default is typed twice.
"""
from __future__ import annotations

import json
import os
import shlex
import sys

# numpy's BLAS runs the engine's small products (the continuous cache's attention) fastest on one
# thread once anything else holds a core: 152 against 278 µs a step beside one busy process, and
# 143 against 128 µs alone (bench/NOTES.md). Set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import click
from click.core import ParameterSource

import lm
from cli_options import (LMGroup, backend_option, checkpoint_option, device_option, field_option, int8_option,
                         parse_duration, per_optimizer, read_text_argument)
from lm.data.config import DEFAULT_SUBWORD_VOCAB, KINDS, TokenizerConfig
from lm.evaluate.config import SPLITS, EvalConfig
from lm.model.config import ADAPTIVE_MIN_VOCAB, CELLS, SOFTMAXES, ModelConfig
from lm.serve.settings import LOOPBACK, ServeSettings
from lm.suggest.config import DEFAULT_MAX_TOKENS, STOP_AT, GenerationConfig, ReplConfig, SuggestConfig
from lm.training.config import (AVERAGES, DEFAULT_CLIP, DEFAULT_LR, DEFAULT_WEIGHT_DECAY, OPTIMIZERS, PRECISIONS,
                                SCHEDULES, TrainConfig, run_configs)
from lm.training.presets import SIZES


@click.group(cls=LMGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(lm.__version__, prog_name="lm")
def cli():
    """Train stacked-LSTM language models on your own text and get keyboard-style suggestions.

    Example:

        lm train corpus.txt
    """


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--valid", type=click.Path(), help="Validation file (default: hold out the end of the corpus).")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the corpus files.")
@field_option(TokenizerConfig, "kind", "Tokenizer.", flag="--tokenizer", type=click.Choice(KINDS))
@field_option(TokenizerConfig, "vocab_size", f"Vocabulary size (default: all chars; {DEFAULT_SUBWORD_VOCAB} subwords; words "
              "seen --min-count times).", type=int)
@field_option(TokenizerConfig, "min_count", "Word tokenizer: rarer words become <unk> (default: 1 when the text "
              "already has <unk> marks, as WikiText does, else 2).", type=int)
@click.option("--size", type=click.Choice(["auto", *SIZES]), default="auto", show_default=True,
              help="A preset: tiny (a phone-keyboard model, about 1.4 M parameters at 10k words), small, medium, classic "
              "(PyTorch's word_language_model recipe: 2×200, SGD lr 20, 20×35 windows), large (AWD-LSTM style, for a "
              "GPU); auto picks the largest of tiny, small and medium that the time (--max-time, else the epochs) can "
              "train on this corpus, timing them on this machine, and classic for a word vocabulary when the time "
              "cannot feed medium. A timed run re-plans once if it goes slower or faster than timed. Flags given "
              "beside it win.")
@field_option(ModelConfig, "cell", "Recurrent cell.", type=click.Choice(list(CELLS)))
@field_option(ModelConfig, "layers", "Stacked recurrent layers.")
@field_option(ModelConfig, "hidden", "Hidden units per layer.")
@field_option(ModelConfig, "emb", "Embedding size (the tied output layer shares it).")
@field_option(ModelConfig, "projection", "A linear map from the hidden units to the embedding before the tied "
              "output layer (--no-projection needs --hidden equal to --emb).", flag="--projection/--no-projection")
@field_option(ModelConfig, "dropout", "Dropout on embeddings, between layers and on outputs.")
@field_option(ModelConfig, "locked_dropout", "Training: one --dropout mask per sequence, the same at every step "
              "(variational dropout).", flag="--locked-dropout/--no-locked-dropout")
@field_option(ModelConfig, "embedding_dropout", "Training: drop whole word types from the embedding with this probability.")
@field_option(ModelConfig, "weight_drop", "Training: DropConnect on the hidden-to-hidden weights with this probability.")
@field_option(ModelConfig, "ar", "Training: activation regularization, this times the mean squared last-layer output.")
@field_option(ModelConfig, "tar", "Training: temporal activation regularization, this times the mean squared "
              "change of the last-layer output from step to step.")
@field_option(ModelConfig, "softmax", "Output layer: full (tied to the embedding) or adaptive (cheaper for large "
              f"vocabularies); auto picks adaptive from {ADAPTIVE_MIN_VOCAB:,} tokens.",
              type=click.Choice(SOFTMAXES))
@field_option(TrainConfig, "batch", "Parallel streams per step.")
@field_option(TrainConfig, "bptt", "Tokens per window of truncated backpropagation through time.")
@field_option(TrainConfig, "optimizer", "Optimizer.", type=click.Choice(OPTIMIZERS))
@field_option(TrainConfig, "lr", f"Peak learning rate (default: {per_optimizer(DEFAULT_LR)}).", type=float)
@field_option(TrainConfig, "weight_decay", f"Weight decay, decoupled for adamw (default: {per_optimizer(DEFAULT_WEIGHT_DECAY)}).", type=float)
@field_option(TrainConfig, "clip", f"Clip the gradient norm to this (0: off; default: {per_optimizer(DEFAULT_CLIP)}).", type=float)
@field_option(TrainConfig, "schedule", "Learning-rate schedule after warm-up.", type=click.Choice(SCHEDULES))
@field_option(TrainConfig, "average", "Keep an averaged copy of the weights and save it when it validates better: "
              "ema (moving average), asgd (from the first evaluation without improvement), none.",
              type=click.Choice(AVERAGES))
@field_option(TrainConfig, "ema_decay", "With --average ema: the average keeps this share of itself each step.")
@field_option(TrainConfig, "vary_bptt", "Draw each window's length around --bptt (and scale the rate to it).",
              flag="--vary-bptt/--fixed-bptt")
@field_option(TrainConfig, "tune_cache", "At the end, tune the continuous cache that adapts suggestions to the "
              "text typed, on the validation text.", flag="--tune-cache/--no-tune-cache")
@field_option(TrainConfig, "warmup", "Warm-up steps.")
@field_option(TrainConfig, "epochs", "Passes over the training text.")
@field_option(TrainConfig, "max_steps", "Stop after this many steps.", type=int)
@click.option("--max-time", callback=parse_duration, help="Stop after this long: seconds, or 90s, 5m, 1h.")
@field_option(TrainConfig, "eval_every", "Evaluate every N steps (0: each epoch).")
@field_option(TrainConfig, "patience", "Stop after this many evaluations without improvement (0: never).")
@field_option(TrainConfig, "seed", "Random seed.")
@field_option(TrainConfig, "device", "auto, cpu or cuda.")
@field_option(TrainConfig, "precision", "Matrix products in bf16 (auto: on GPUs and CPUs with native bf16) or fp32.",
              type=click.Choice(PRECISIONS))
@click.option("--out", "-o", type=click.Path(), help="Checkpoint folder (default: a new one under checkpoints/).")
@click.option("--resume", is_flag=True, help="Continue the run saved in --out (or the newest checkpoint) with its tokenizer and settings.")
@click.option("--new-corpus", is_flag=True, help="With --resume: go on although the corpus differs from the one the run started on.")
@click.option("--init-from", type=click.Path(), help="Fine-tune this checkpoint on the corpus: its model and tokenizer, a fresh "
              "optimizer and schedule, a new --out.")
@click.option("--overwrite", is_flag=True, help="Replace an existing checkpoint folder.")
@click.option("--tensorboard", type=click.Path(file_okay=False), help="Also log the scalars (train loss, lr, tokens/s; "
              "valid loss, perplexity, bits/char) as TensorBoard event files in this folder.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Data-parallel: train with this many worker processes on this machine (--batch is split between them).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.pass_context
def train(ctx, paths, valid, encoding, out, resume, new_corpus, init_from, overwrite, tensorboard, nproc, quiet, size, **options):
    """Train a language model on text files, folders of them, or hf:NAME[:CONFIG].

    The checkpoint folder holds the config, weights, tokenizer and metrics; Ctrl-C saves it
    and prints the command that resumes. --init-from adapts a trained model to your own text.

    Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK set) it runs as one worker of several.

    Example:

        lm train corpus.txt --tokenizer char --max-time 5m
    """
    from lm.training import distributed

    if nproc > 1 and not distributed.launched_as_worker():
        # The workers run this same command; the first prints the progress and the summary.
        sys.exit(distributed.launch(distributed.worker_command(command_words(ctx, skip=("nproc",))), nproc))
    import cli_render
    from lm.data.corpus import load_corpus
    from lm.training.trainer import train as train_run

    given = {name for name in options if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    corpus = load_corpus(list(paths), valid=valid, encoding=encoding)
    with distributed.session():
        with cli_render.train_progress(quiet, tensorboard if distributed.is_writer() else None) as progress:
            result = train_run(corpus, out, *run_configs({**options, "size": size}), progress, resume=resume,
                               overwrite=overwrite, init_from=init_from, new_corpus=new_corpus, given=given)
        writer = distributed.is_writer()
    if writer:
        cli_render.show_train_result(result, quiet, resume_command(ctx, result.checkpoint))
    code = 130 if result.interrupted else 0
    if distributed.launched_as_worker():
        distributed.leave(code)
    sys.exit(code)


def resume_command(ctx: click.Context, checkpoint) -> str:
    """The `lm train` command that continues this run: every argument given, --out and --resume, quoted."""
    words = ["lm", *command_words(ctx, skip=("out", "resume", "init_from", "overwrite"))]
    return shlex.join([*words, "--out", str(checkpoint), "--resume"])


def command_words(ctx: click.Context, skip=()) -> list[str]:
    """This command's name and the arguments given on its command line, but those in `skip`."""
    words = [ctx.info_name]
    for param in ctx.command.params:
        if param.name in skip:
            continue
        if ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if isinstance(param, click.Argument):
            words += list(value)
        elif param.is_flag:
            words.append(param.opts[0] if value == param.flag_value or value is True else param.secondary_opts[0])
        else:
            for item in value if param.multiple else [value]:
                words += [param.opts[0], str(item)]
    return words


@cli.command("eval")
@click.argument("paths", nargs=-1, required=True)
@checkpoint_option
@field_option(EvalConfig, "batch", "Parallel streams (1: one stream, the exact reference).")
@field_option(EvalConfig, "bptt", "Tokens per window.")
@field_option(EvalConfig, "overlap", "Tokens each stream after the first reads unscored before its cut (0: zero-state cuts).")
@field_option(EvalConfig, "max_words", "Evaluate only the first N words.", type=int)
@field_option(EvalConfig, "keyboard", "Measure top-1/top-3 accuracy and keystroke savings.", flag="--keyboard/--no-keyboard")
@field_option(EvalConfig, "keyboard_words", "Keyboard metrics on the first N words (a suggestion per keystroke is slow).")
@field_option(EvalConfig, "typing", "Also type the text with slips (seeded) through the keyboard, beside a plain "
              "keyboard and a spell checker: next words, completions, corrections, swipes.", is_flag=True,
              show_default=False)
@field_option(EvalConfig, "typing_words", "--typing on the first N words.")
@field_option(EvalConfig, "split", "Split of an hf: dataset.", type=click.Choice(SPLITS))
@field_option(EvalConfig, "encoding", "Text encoding of the files.")
@field_option(EvalConfig, "device", "auto, cpu or cuda.")
@field_option(EvalConfig, "cache", "Also report the figures with the checkpoint's continuous cache.",
              flag="--cache/--no-cache")
@field_option(EvalConfig, "ngram", "Also report the figures with the word model's n-gram mixed in.",
              flag="--ngram/--no-ngram")
@field_option(EvalConfig, "adapt", "Also read the text with dynamic evaluation: a small gradient step "
              "every 20 tokens on the text already read (slow).", is_flag=True, show_default=False)
@field_option(EvalConfig, "adapt_lr", "Dynamic evaluation: step size (RMS-normalised).")
@field_option(EvalConfig, "adapt_decay", "Dynamic evaluation: pull back toward the trained weights per step.")
@field_option(EvalConfig, "tune_cache", "First tune the cache (and count a word model's n-gram) on the "
              "checkpoint's own training and validation text, and save them in the checkpoint.", is_flag=True,
              show_default=False)
@field_option(EvalConfig, "int8", "Evaluate the int8 model that suggest, generate and repl run by default.",
              flag="--int8/--fp32")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def eval_(paths, checkpoint, as_json, quiet, **options):
    """Measure a model on text files, folders or hf:NAME[:CONFIG]: perplexity, bits per char, keyboard metrics.

    The loss is summed over the whole text with the state carried; perplexity per word and
    bits per character compare char, subword and word models. The keyboard metrics simulate
    typing the first --keyboard-words words with a three-slot suggestion strip. --typing types
    the first --typing-words words again with a typist's slips, through the keyboard that
    corrects them, and compares it with a plain keyboard and a spell checker.

    Example:

        lm eval wikitext-2/test.txt -c checkpoints/wiki --max-words 50000 --typing
    """
    import cli_render
    from lm.evaluate.evaluation import evaluate_paths
    from lm.evaluate.typing import typing_paths

    config = EvalConfig(**options)
    with cli_render.eval_bar(quiet) as bar:
        result = evaluate_paths(list(paths), checkpoint, config, bar)
        typed = typing_paths(list(paths), result.checkpoint, config, bar) if config.typing else None
    if as_json:
        click.echo(json.dumps({**result.to_dict(), "typing": typed.to_dict() if typed else None}, indent=2))
    else:
        cli_render.stdout.print(cli_render.eval_table(result))
        if typed:
            cli_render.stdout.print(cli_render.typing_table(typed))


@cli.command()
@click.argument("prompt", required=False, default="")
@checkpoint_option
@field_option(GenerationConfig, "n", "Samples drawn at once, as one batch.")
@field_option(GenerationConfig, "max_tokens", f"Most tokens per sample (default: {DEFAULT_MAX_TOKENS} unless --max-words is given).", type=int)
@field_option(GenerationConfig, "max_words", "Most words per sample.", type=int)
@field_option(GenerationConfig, "stop_at", "End a sample with its sentence or paragraph.", type=click.Choice(STOP_AT))
@field_option(GenerationConfig, "stop", "End a sample after this text (repeatable).", type=str, multiple=True, show_default=False)
@field_option(GenerationConfig, "temperature", "Sampling temperature (0: greedy).")
@field_option(GenerationConfig, "top_k", "Draw from the k most likely tokens (0: all).")
@field_option(GenerationConfig, "top_p", "Draw from the most likely tokens holding this probability (1: all).")
@field_option(GenerationConfig, "repetition_penalty", "Make tokens seen in the last --repetition-window tokens less likely (1: off).")
@field_option(GenerationConfig, "repetition_window", "Tokens the repetition guard looks back over.")
@field_option(GenerationConfig, "seed", "Random seed (default: a fresh one; --json shows it).", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the prompt, settings, seed and samples as JSON.")
@int8_option
@device_option
@backend_option
def generate(prompt, checkpoint, as_json, int8, device, backend, **options):
    """Continue PROMPT (or start a new text) with a trained model, streaming the text.

    The prompt is read once after a newline; each new token costs one step of the model.
    PROMPT '-' reads the prompt from stdin and prints only the continuation.

    Example:

        lm generate "The old man" --max-words 40 --temperature 0.7 --n 3
    """
    import cli_inference
    from lm.suggest.sampler import generate as generate_text

    config = GenerationConfig(**options)
    config.validate()
    shown = "" if prompt == "-" else prompt  # a prompt from stdin is not echoed back
    prompt = read_text_argument(prompt, "PROMPT")
    predictor = lm.load(checkpoint, device=device, int8=int8, cache=False, ngram=False, backend=backend)
    generation = generate_text(predictor.backend, predictor.tokenizer, prompt, config)
    try:
        if as_json:
            generation.run()
            click.echo(json.dumps({"prompt": prompt, "config": config.to_dict(), **generation.to_dict()}, indent=2, ensure_ascii=False))
        else:
            cli_inference.show_generation(shown, generation, config.n)
    except KeyboardInterrupt:
        cli_inference.interrupted()
        sys.exit(130)


@cli.command()
@checkpoint_option
@field_option(ReplConfig, "temperature", "Sampling temperature (0: greedy); :temp changes it.")
@field_option(ReplConfig, "top_k", "Draw from the k most likely tokens (0: all); :topk changes it.")
@field_option(ReplConfig, "top_p", "Draw from the most likely tokens holding this probability (1: all); :topp changes it.")
@field_option(ReplConfig, "max_words", "Most words the model writes per turn; :len changes it.")
@field_option(ReplConfig, "stop_at", "End a turn with the sentence, the paragraph or none; :until changes it.",
              type=click.Choice([*STOP_AT, "none"]), callback=lambda ctx, param, value: None if value == "none" else value)
@field_option(ReplConfig, "repetition_penalty", "Repetition guard (1: off); :rep changes it.")
@field_option(ReplConfig, "seed", "Random seed for every turn (default: fresh); :seed changes it.", type=int)
@field_option(ReplConfig, "correct", "Forgive typing: each word of a line is kept or corrected as a phone keyboard "
              "does before the model reads it; :correct changes it.", flag="--correct/--no-correct")
@int8_option
@device_option
@backend_option
def repl(checkpoint, int8, device, backend, **options):
    """Write a text together with the model, turn by turn.

    Type some text and press Enter: the model continues it, and both stay in the text for the
    next turn (the state is carried, not recomputed). An empty line lets the model go on. The
    words of a line are corrected as on a phone keyboard ("teh" becomes "the"), and the reply
    names them before the model's continuation; :undo takes the turn back.
    Commands start with ':' (:help lists them). :temp, :topk, :topp, :len, :until, :rep, :seed
    and :correct change a setting; :reset, :undo, :context, :suggest, :settings, :help and :quit act.
    Ctrl-C stops the model, Ctrl-D leaves. When stdin is not a terminal, lines are read from it
    and plain text is written.

    Example:

        lm repl -c checkpoints/wiki --temperature 0.7
    """
    import cli_inference
    from lm.suggest.repl import Repl

    cli_inference.run_repl(Repl.load(lm.load(checkpoint, device=device, int8=int8, backend=backend), ReplConfig(**options)))


@cli.command()
@checkpoint_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every network, with a warning).")
@click.option("--port", default=8000, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@field_option(ServeSettings, "api_key", "Require `Authorization: Bearer KEY` on every endpoint but /health, /metrics and the page.",
              envvar="LM_API_KEY", show_envvar=True, show_default=False, type=str)
@field_option(ServeSettings, "max_body", "Largest request body in bytes (larger: 413).")
@field_option(ServeSettings, "max_sessions", "Keystroke sessions kept (least recently used dropped first), split "
              "evenly between the server processes.")
@field_option(ServeSettings, "session_idle", "Seconds after which an unused session is dropped.")
@field_option(ServeSettings, "processes", "Server processes, each with its own sessions (default: one per core on the "
              "CPU, one on a GPU).", type=int, show_default=False)
@field_option(ServeSettings, "workers", "Requests doing model work at once in each process (torch gets cores / "
              "(processes × workers) threads each).")
@field_option(ServeSettings, "cache", "Suggestions use the checkpoint's continuous cache (one per session).",
              flag="--cache/--no-cache")
@field_option(ServeSettings, "ngram", "Suggestions mix in the word model's n-gram.", flag="--ngram/--no-ngram")
@field_option(ServeSettings, "correct", "Forgive typing: correct a word on space, fix slips in prefixes, take swipes "
              "(a request can still say \"correct\": false).", flag="--correct/--no-correct")
@field_option(ServeSettings, "layout", "The keyboard layout slips and swipes are weighed on (qwerty-en-us, qwertz-de, "
              "azerty-fr, or a JSON file); the page draws it.")
@click.option("--words", "words_file", type=click.Path(), help="A user dictionary, one word a line: offered, and never corrected.")
@field_option(ServeSettings, "cors_origin", "Let pages from this origin (https://host:port, or * for any) call the "
              "server from a browser (repeatable; default: none).", type=str, multiple=True, show_default=False)
@int8_option
@backend_option
def serve(checkpoint, host, port, device, int8, backend, words_file, **options):
    """Serve suggestions and generation over HTTP, with a page that suggests as you type.

    Endpoints: GET / (the page), GET|POST /suggest, POST /swipe, GET /layout, POST /generate
    (with "stream": true, server-sent events), the OpenAI-style POST /v1/completions and GET
    /v1/models, GET /metrics (Prometheus), GET /info, GET /health. A client that sends a
    "session" id gets its text's state kept, so each keystroke costs one word at most. Stops
    cleanly on Ctrl-C or SIGTERM.

    Example:

        lm serve -c checkpoints/wiki --port 8000
    """
    import cli_inference
    from lm.data.lexicon import read_words_file
    from lm.serve import listen, load_app, run

    if host not in LOOPBACK:
        cli_inference.warn_open_host(host, has_key=bool(options["api_key"]))
    words = tuple(read_words_file(words_file)) if words_file else ()
    app = load_app(checkpoint, ServeSettings(**options, words=words), device=device, int8=int8, backend=backend)
    service = app.state.service
    sock = listen(host, port, service.settings.processes)
    line = cli_inference.serving_line(service, host, sock.getsockname()[1])
    sys.exit(run(app, sock, service.settings.processes, lambda: click.echo(line, err=True)))  # once every process listens


@cli.command()
@click.argument("text", required=False, default="")
@checkpoint_option
@field_option(SuggestConfig, "k", "How many suggestions.", flag="-k")
@field_option(SuggestConfig, "beam_width", "Piece sequences kept per search step (char and subword models).")
@field_option(SuggestConfig, "max_depth", "Search steps after the typed prefix (char models: the longest word offered).")
@field_option(SuggestConfig, "punctuation_min", "Offer punctuation only when at least this likely.")
@click.option("--words", "words_file", type=click.Path(), help="A user dictionary, one word a line: char and subword "
              "models may offer its words besides those of the training text.")
@field_option(SuggestConfig, "any_word", "Char and subword models: offer any spelling, not only words of "
              "the training text and --words.", is_flag=True, show_default=False)
@click.option("--json", "output", flag_value="json", help="Print a JSON list of {word, probability, completion}.")
@click.option("--plain", "output", flag_value="plain", help="Print one word per line.")
@click.option("--cache/--no-cache", default=True, show_default=True,
              help="Let the continuous cache tuned at the end of training adapt the suggestions to TEXT.")
@click.option("--ngram/--no-ngram", default=True, show_default=True,
              help="Mix in the n-gram counted from the training text (word models, when it helped on the validation text).")
@click.option("--adapt", is_flag=True, help="First adapt the weights to TEXT by dynamic evaluation (a gradient step "
              "every 20 tokens): for a long TEXT of your own, such as a document you are writing.")
@field_option(SuggestConfig, "correct", "Forgive typing: correct a word just finished (TEXT ending in a space or "
              "punctuation) and complete prefixes with a slip in them.", flag="--correct/--no-correct")
@field_option(SuggestConfig, "layout", "The keyboard layout slips are weighed on: a name (qwerty-en-us, qwertz-de, azerty-fr) or a JSON file like those in lm/suggest/layouts/.")
@int8_option
@device_option
@backend_option
def suggest(text, checkpoint, words_file, output, int8, device, backend, cache, ngram, adapt, **options):
    """Suggest what comes after TEXT, like a phone keyboard's suggestion strip.

    After a space (or no text): the most likely next words. Inside a word: its completions and,
    weighted by the chance that the typed word is already whole, the words after it (their
    completion starts with a space); the typed word itself never takes a slot. Completions that
    fix a slip in the typed letters ("recie" -> received) join them when likelier. A word just
    finished is kept or corrected, as a phone keyboard does on space: "the clouds are in the
    skt " shows sky as the correction, with the typed word and alternatives beside it. Char and
    subword models offer words of the training text, --words and words typed twice in TEXT.
    TEXT '-' reads the text from stdin.

    Example:

        lm suggest "the clouds are in the" -k 5
    """
    import cli_inference
    from lm.data.lexicon import read_words_file
    from lm.mix.config import AdaptConfig
    from lm.suggest.keyboard import suggest_text

    text = read_text_argument(text, "TEXT")
    words = read_words_file(words_file) if words_file else ()
    strip = suggest_text(text, checkpoint, SuggestConfig(**options), device=device, int8=int8, words=words,
                         cache=cache, ngram=ngram, adapt=AdaptConfig() if adapt else None, backend=backend)
    cli_inference.show_strip(strip, text, output)


@cli.command("export")
@click.argument("out_dir", type=click.Path())
@checkpoint_option
@click.option("--int8/--fp32", "int8", default=None,
              help="Quantize the weights to int8 with ONNX Runtime (LSTM models): about a quarter of the size. "
                   "Default: --fp32; with --web, --int8 for LSTM models.")
@click.option("--web", is_flag=True, help="Write a static web page that suggests as you type, computed in the browser "
              "with onnxruntime-web: no server, works offline (char and word models).")
@click.option("--onnxruntime-web", "onnxruntime_web", type=click.Path(),
              help="With --web: a copy of onnxruntime-web (its .tgz or unpacked folder) for machines without the npm "
                   "registry (default: $LM_ONNXRUNTIME_WEB, else fetched once and cached).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in OUT_DIR.")
def export(out_dir, checkpoint, int8, web, onnxruntime_web, overwrite):
    """Export a model for apps and phones, or as a web page that suggests as you type.

    OUT_DIR gets model.onnx, one step function (ids, state) -> (logits, state) with batch and
    time dynamic; manifest.json (tokenizer, state names and shapes, checksums); the checkpoint's
    config.json, tokenizer, lexicon and n-gram; lm-engine.zip, lm's own suggestion engine; and
    runtime.py, which runs that engine with onnxruntime and numpy, without torch or lm installed:
    the strip lm suggest shows. lm suggest -c OUT_DIR loads it too. The graph is checked against
    the PyTorch model before it is kept.

    With --web, OUT_DIR gets a static page instead: index.html, the graph, the tokenizer and
    lexicon as JSON, the suggestion engine in JavaScript and onnxruntime-web's files. Serve it
    with any static file server; every suggestion is computed in the page.

    Example:

        lm export -c checkpoints/wiki phone-model --int8

        lm export -c checkpoints/shakespeare-char site --web
    """
    import cli_inference

    if web:
        from lm.export.web import export_web

        result = export_web(checkpoint, out_dir, int8=int8, overwrite=overwrite, onnxruntime_web=onnxruntime_web)
        cli_inference.show_web_export(result)
        return
    if onnxruntime_web is not None:
        raise click.UsageError("--onnxruntime-web goes with --web")
    from lm.export.onnx import export_checkpoint

    cli_inference.show_export(export_checkpoint(checkpoint, out_dir, int8=bool(int8), overwrite=overwrite))


@cli.command()
@checkpoint_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(checkpoint, as_json):
    """Describe a checkpoint: model, size, tokenizer, settings, corpus, best figures and curve.

    Reads config.json and metrics.jsonl only, so it is quick on any checkpoint. The checkpoint
    folder also holds curves.png, the same curves as a picture.

    Example:

        lm info -c checkpoints/shakespeare
    """
    from lm.checkpoint.report import checkpoint_summary
    from lm.checkpoint.store import read_metrics

    summary = checkpoint_summary(checkpoint)
    if as_json:
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    import cli_render

    cli_render.show_info(summary, read_metrics(summary["checkpoint"]))


if __name__ == "__main__":
    cli()
