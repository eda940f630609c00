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
        fast_downward.pddl2sas = lambda *args, **kw: copy.deepcopy(translate(*args, **kw))


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
