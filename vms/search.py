"""The Virtual Machines search box, in oVirt's syntax.

    Vms: name = web* and status = up or memory > 2048

A small hand-written parser turns the text into a Q object for the VM queryset (never eval,
never SQL): conditions `field op value`, joined with `and` (binds tighter) and `or`, grouped
with parentheses; the `Vms:` prefix may be given. A plain word searches names as before
(`web` = name contains "web"). A trailing `*` is a prefix search, which the name index
answers. Bad text raises SearchError with a message for the user.
"""

import re
from dataclasses import dataclass

from django.db.models import Q

from portal.kernel.search import SearchError, search_text

from .choices import VMStatus

# The search box's tooltip (templates/vms/vm_list.html).
HINT = (
    "Search like oVirt: name, status, host, cluster, datacenter, description, memory, cpus "
    "with = != < >, joined with and / or; a plain word searches names"
)

# field -> (lookup path, kind): "text" fields take = and != with * wildcards, "number"
# fields every comparison, "status" the statuses' names.
FIELDS = {
    "name": ("name", "text"),
    "status": ("status", "status"),
    "host": ("host__name", "text"),
    "cluster": ("cluster__name", "text"),
    "datacenter": ("cluster__data_center__name", "text"),
    "description": ("description", "text"),
    "memory": ("memory_mb", "number"),
    "cpus": ("vcpus", "number"),
}
FIELD_LIST = ", ".join(FIELDS)
NUMBER_LOOKUPS = {"=": "exact", ">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}
MAX_CONDITIONS = 20
NUMBER_MAX = 10**12

_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<paren>[()])
      | (?P<op>!=|>=|<=|=|>|<)
      | "(?P<dq>[^"]*)"
      | '(?P<sq>[^']*)'
      | (?P<word>[^\s()=<>!"']+)
      | (?P<bad>\S)
    )""",
    re.VERBOSE,
)
_PREFIX_RE = re.compile(r"^\s*([A-Za-z]+)\s*:")


@dataclass(frozen=True)
class Token:
    kind: str  # "paren", "op", "word", "quoted"
    text: str


def _status_key(text: str) -> str:
    return re.sub(r"[\s_-]", "", text).lower()


STATUSES = {_status_key(s.value): s.value for s in VMStatus} | {
    _status_key(s.label): s.value for s in VMStatus
}


def tokenize(text: str) -> list[Token]:
    tokens = []
    for match in _TOKEN_RE.finditer(text):
        if match.group("bad") is not None:
            raise SearchError(f"Unexpected '{match.group('bad')}' in the search.")
        if match.group("paren"):
            tokens.append(Token("paren", match.group("paren")))
        elif match.group("op"):
            tokens.append(Token("op", match.group("op")))
        elif match.group("word") is not None:
            tokens.append(Token("word", match.group("word")))
        else:
            quoted = match.group("dq") if match.group("dq") is not None else match.group("sq")
            tokens.append(Token("quoted", quoted))
    return tokens


def _text_condition(path: str, op: str, value: str, field: str) -> Q:
    if op not in ("=", "!="):
        raise SearchError(f"Use = or != with {field}, not {op}.")
    if "*" not in value:
        q = Q(**{f"{path}__iexact": value})
    else:
        inner = value.strip("*")
        if not inner:
            q = Q(**{f"{path}__isnull": False})
        elif "*" in inner:  # a wildcard in the middle: a regular expression of escaped parts
            pattern = ".*".join(re.escape(part) for part in value.split("*"))
            q = Q(**{f"{path}__iregex": f"^{pattern}$"})
        elif value.startswith("*") and value.endswith("*"):
            q = Q(**{f"{path}__icontains": inner})
        elif value.endswith("*"):
            q = Q(**{f"{path}__istartswith": inner})
        else:
            q = Q(**{f"{path}__iendswith": inner})
    return ~q if op == "!=" else q


def _status_condition(op: str, value: str) -> Q:
    if op not in ("=", "!="):
        raise SearchError(f"Use = or != with status, not {op}.")
    key = _status_key(value)
    if "*" in key:
        pattern = re.compile(".*".join(re.escape(p) for p in key.split("*")))
        wanted = sorted({s for k, s in STATUSES.items() if pattern.fullmatch(k)})
    else:
        wanted = [STATUSES[key]] if key in STATUSES else []
    if not wanted:
        names = ", ".join(s.label for s in VMStatus)
        raise SearchError(f"There is no status '{value}'. The statuses are: {names}.")
    q = Q(status__in=wanted)
    return ~q if op == "!=" else q


def _number_condition(path: str, op: str, value: str, field: str) -> Q:
    text = value.lower()
    scale = 1
    if field == "memory" and text.endswith(("gb", "mb")):
        scale, text = (1024 if text.endswith("gb") else 1), text[:-2]
    if not re.fullmatch(r"[0-9]{1,13}", text) or int(text) * scale > NUMBER_MAX:
        unit = " (MB, or with GB)" if field == "memory" else ""
        raise SearchError(f"{field} needs a whole number{unit}, not '{value}'.")
    number = int(text) * scale
    if op == "!=":
        return ~Q(**{path: number})
    return Q(**{f"{path}__{NUMBER_LOOKUPS[op]}": number})


def _name_words(value: str) -> Q:
    """A plain word: names containing it, or, with a *, matching it."""
    if "*" in value:
        return _text_condition("name", "=", value, "name")
    return Q(name__icontains=value)


class _Parser:
    def __init__(self, tokens: list[Token]):
        self.tokens = tokens
        self.at = 0
        self.conditions = 0

    def peek(self, offset: int = 0) -> Token | None:
        n = self.at + offset
        return self.tokens[n] if n < len(self.tokens) else None

    def take(self) -> Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "word" and token.text.lower() == word

    def parse(self) -> Q:
        q = self.expr()
        if self.peek() is not None:
            token = self.peek()
            raise SearchError(f"Unexpected '{token.text}': is a '(' missing?")
        return q

    def expr(self) -> Q:
        q = self.term()
        while self.keyword("or"):
            self.take()
            q = q | self.term()
        return q

    def term(self) -> Q:
        q = self.factor()
        while True:
            if self.keyword("and"):
                self.take()
                q = q & self.factor()
            elif self.peek() is not None and not self.keyword("or") and self.peek().text != ")":
                q = q & self.factor()  # side by side: both must hold, as with "and"
            else:
                return q

    def factor(self) -> Q:
        token = self.peek()
        if token is None:
            raise SearchError("The search ends where a condition was expected.")
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise SearchError(f"A search may hold at most {MAX_CONDITIONS} conditions.")
        if token.kind == "paren" and token.text == "(":
            self.take()
            q = self.expr()
            closing = self.peek()
            if closing is None or closing.text != ")" or closing.kind != "paren":
                raise SearchError("A ')' is missing.")
            self.take()
            return q
        if token.kind == "paren":
            raise SearchError("A ')' has no '(' before it.")
        if token.kind == "op":
            raise SearchError(f"'{token.text}' needs a field before it ({FIELD_LIST}).")
        if token.kind == "word" and token.text.lower() in ("and", "or"):
            raise SearchError(f"'{token.text}' needs a condition on each side.")
        self.take()
        following = self.peek()
        if following is None or following.kind != "op":
            return _name_words(token.text)
        return self.condition(token)

    def condition(self, field_token: Token) -> Q:
        field = field_token.text.lower()
        if field_token.kind != "word" or field not in FIELDS:
            raise SearchError(f"Unknown field '{field_token.text}'. Search by {FIELD_LIST}.")
        op = self.take().text
        value = self.peek()
        if value is None or value.kind not in ("word", "quoted"):
            raise SearchError(f"'{field_token.text} {op}' needs a value after it.")
        self.take()
        path, kind = FIELDS[field]
        if kind == "status":
            return _status_condition(op, value.text)
        if kind == "number":
            return _number_condition(path, op, value.text, field)
        return _text_condition(path, op, value.text, field)


def vm_search(text) -> Q:
    """The Q object for the search box's text; SearchError with a message when it is bad."""
    text = search_text(text)
    prefix = _PREFIX_RE.match(text)
    if prefix:
        if prefix.group(1).lower() != "vms":
            raise SearchError(
                f"This box searches virtual machines: start with 'Vms:', not '{prefix.group(1)}:'."
            )
        text = text[prefix.end() :]
    tokens = tokenize(text)
    if not tokens:
        return Q()
    if all(t.kind == "word" for t in tokens) and not any(
        t.text.lower() in ("and", "or") or "*" in t.text for t in tokens
    ):
        return Q(name__icontains=text.strip())  # plain words: names containing them, as before
    return _Parser(tokens).parse()
