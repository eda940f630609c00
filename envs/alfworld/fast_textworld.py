"""Caches for stock TextWorld's PDDL engine: same transcripts, a fraction of the time (issue 4).

Profiles of textworld 1.7.0 on ALFWorld games: ~95 % of a step is tatsu re-parsing the grammar's template
strings ("take {o} from {r}", feedback rules) into symbol trees, for every admissible command, every step;
~85 % of a reset is fast-downward translating the same PDDL domain + problem to SAS, twice. All three inputs
are immutable strings, so the results can be memoised:

- textgen `_parse_and_convert(text, rule_name=...)`: the derivation stack is mutated (symbols get a context),
  so the cache hands out a deep copy of the parsed tree, never the cached tree itself;
- `Rule.parse_conjunctive_query(expr)`: a grammar rule's condition; read-only once parsed;
- `fast_downward.pddl2sas(domain, problem, optimize=...)`: the translated task; PddlState keeps a private copy
  of the result, so the cache returns a deep copy as well.

`install()` patches the module attributes in place (idempotent); `uninstall()` restores the originals. The
test suite plays the same games with and without the caches and checks the transcripts are identical.
"""

from __future__ import annotations

import copy
import functools
import threading

_ORIGINALS: dict[str, object] = {}
_LOCK = threading.Lock()  # env copies reset in threads; lru_cache is thread-safe, install() must be too
_TRANSLATE_LOCK = threading.RLock()


def install() -> None:
    import fast_downward
    import textworld.envs.pddl.textgen as textgen
    from textworld.logic import Rule

    with _LOCK:
        if _ORIGINALS:
            return
        _ORIGINALS.update(
            parse=textgen._parse_and_convert,
            query=Rule.__dict__["parse_conjunctive_query"],
            pddl2sas=fast_downward.pddl2sas,
        )
        parse = functools.lru_cache(maxsize=4096)(_ORIGINALS["parse"])
        textgen._parse_and_convert = lambda *args, **kw: copy.deepcopy(parse(*args, **kw))
        Rule.parse_conjunctive_query = staticmethod(functools.lru_cache(maxsize=1024)(Rule.parse_conjunctive_query))
        translate = functools.lru_cache(maxsize=64)(_ORIGINALS["pddl2sas"])

        def pddl2sas(*args, **kwargs):
            return copy.deepcopy(translate(*args, **kwargs))

        pddl2sas.thread_safe = getattr(_ORIGINALS["pddl2sas"], "thread_safe", False)
        fast_downward.pddl2sas = pddl2sas


def uninstall() -> None:
    import fast_downward
    import textworld.envs.pddl.textgen as textgen
    from textworld.logic import Rule

    with _LOCK:
        if not _ORIGINALS:
            return
        textgen._parse_and_convert = _ORIGINALS["parse"]
        Rule.parse_conjunctive_query = _ORIGINALS["query"]
        fast_downward.pddl2sas = _ORIGINALS["pddl2sas"]
        _ORIGINALS.clear()


def installed() -> bool:
    return bool(_ORIGINALS)


class _ThreadLocalParser:
    """Stands in for one of textworld's module-level tatsu parsers: each thread gets its own instance.

    tatsu parsers keep their parse stack on the instance, so two threads parsing at once corrupt it ("pop
    from empty list"); rollout actors reset ALFWorld env copies in threads while stepping others."""

    def __init__(self, make):
        self._make, self._local = make, threading.local()

    def parse(self, *args, **kwargs):
        parser = getattr(self._local, "parser", None)
        if parser is None:
            parser = self._local.parser = self._make()
        return parser.parse(*args, **kwargs)


def thread_safe_parsers() -> None:
    """Give every thread its own textworld parsers (idempotent; textworld's behaviour is otherwise unchanged)."""
    import fast_downward
    import textworld.envs.pddl.logic as pddl_logic
    import textworld.envs.pddl.textgen as textgen
    import textworld.logic as logic

    with _LOCK:
        if not getattr(fast_downward.pddl2sas, "thread_safe", False):
            # fast-downward's translator keeps module-level state too (KeyError / UnboundLocalError when two
            # threads translate at once): one translation at a time. Steps never translate, only resets do.
            original = fast_downward.pddl2sas

            def pddl2sas(*args, **kwargs):
                with _TRANSLATE_LOCK:
                    return original(*args, **kwargs)

            pddl2sas.thread_safe = True
            fast_downward.pddl2sas = pddl2sas
        for module, parser, semantics in (
            (pddl_logic, pddl_logic.PddlLogicParser, pddl_logic.PddlLogicModelBuilderSemantics),
            (textgen, textgen.CSGParser, textgen.CSGModelBuilderSemantics),
            (logic, logic.GameLogicParser, logic.GameLogicModelBuilderSemantics),
        ):
            if not isinstance(module._PARSER, _ThreadLocalParser):
                module._PARSER = _ThreadLocalParser(
                    lambda parser=parser, semantics=semantics: parser(semantics=semantics(), parseinfo=True)
                )
