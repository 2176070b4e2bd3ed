"""Kubernetes label selectors: ``region=eu``, ``ring!=canary``, ``tier in (a,b)``, ``!gpu``.

The grammar and semantics are Kubernetes' own (``k8s.io/apimachinery/pkg/labels``):
requirements are separated by commas and all must hold; ``!=`` and ``notin``
also match members that do not carry the key; the empty selector matches all.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

#: Fleet's limit on ``memberSelector.byLabel``.
MAX_SELECTOR_LENGTH = 512

_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
_KEY = re.compile(rf"^(?:(?P<prefix>{_PREFIX})/)?(?P<name>{_NAME})$")
_VALUE = re.compile(rf"^(?:{_NAME})?$")
_TOKEN = re.compile(r"\s*(==|!=|=|\(|\)|,|!|[^\s=!(),]+)")


class SelectorError(ValueError):
    """A selector that does not parse; the message says where and why."""


class Operator(str, enum.Enum):
    """The requirement kinds Kubernetes label selectors know."""

    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"


@dataclass(frozen=True)
class Requirement:
    """One condition on one label key."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this requirement (Kubernetes semantics)."""
        present = self.key in labels
        match self.operator:
            case Operator.EQUALS | Operator.IN:
                return present and labels[self.key] in self.values
            case Operator.NOT_EQUALS | Operator.NOT_IN:
                return not present or labels[self.key] not in self.values
            case Operator.EXISTS:
                return present
            case Operator.DOES_NOT_EXIST:
                return not present

    def __str__(self) -> str:
        match self.operator:
            case Operator.EQUALS | Operator.NOT_EQUALS:
                return f"{self.key}{self.operator.value}{self.values[0]}"
            case Operator.IN | Operator.NOT_IN:
                return f"{self.key} {self.operator.value} ({','.join(self.values)})"
            case Operator.EXISTS:
                return self.key
            case Operator.DOES_NOT_EXIST:
                return f"!{self.key}"


@dataclass(frozen=True)
class LabelSelector:
    """A parsed selector: every requirement must hold."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a member with ``labels`` is selected."""
        return all(requirement.matches(labels) for requirement in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(requirement) for requirement in self.requirements)


def _check_key(key: str) -> None:
    match = _KEY.match(key)
    if not match:
        raise SelectorError(
            f"{key!r} is not a label key (an optional DNS-subdomain prefix and '/', then a name "
            "of up to 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric)"
        )
    prefix = match.group("prefix")
    if prefix is not None and len(prefix) > 253:
        raise SelectorError(f"the prefix of label key {key!r} is longer than 253 characters")


def _check_value(value: str) -> None:
    if not _VALUE.match(value):
        raise SelectorError(
            f"{value!r} is not a label value (up to 63 alphanumerics, '-', '_' or '.', "
            "starting and ending alphanumeric, or empty)"
        )


class _Tokens:
    """A cursor over the selector's tokens, for error messages that say where."""

    def __init__(self, text: str) -> None:
        self.items: list[tuple[int, str]] = []
        pos = 0
        stripped_end = len(text.rstrip())
        while pos < stripped_end:
            match = _TOKEN.match(text, pos)
            if match is None:  # pragma: no cover - the token pattern matches any non-space
                raise SelectorError(f"unexpected character at position {pos + 1}")
            self.items.append((match.start(1), match.group(1)))
            pos = match.end()
        self.index = 0

    def peek(self) -> str | None:
        return self.items[self.index][1] if self.index < len(self.items) else None

    def take(self, what: str) -> str:
        if self.index >= len(self.items):
            raise SelectorError(f"expected {what} but the selector ended")
        token = self.items[self.index][1]
        self.index += 1
        return token

    def where(self) -> str:
        if self.index < len(self.items):
            return f"at position {self.items[self.index][0] + 1}"
        return "at the end"


def _parse_values(tokens: _Tokens) -> tuple[str, ...]:
    if tokens.take("'('") != "(":
        tokens.index -= 1
        raise SelectorError(f"expected '(' {tokens.where()}")
    values: list[str] = []
    expect_value = True
    while True:
        token = tokens.peek()
        if token is None:
            raise SelectorError("a value list is missing its closing ')'")
        if token == ")":
            tokens.take("')'")
            if expect_value and values:
                values.append("")  # "(a,)" has an empty last value, as in Kubernetes
            break
        if token == ",":
            tokens.take("','")
            if expect_value:
                values.append("")
            expect_value = True
            continue
        if not expect_value:
            raise SelectorError(f"expected ',' or ')' {tokens.where()}")
        tokens.take("a value")
        _check_value(token)
        values.append(token)
        expect_value = False
    if not values:
        raise SelectorError("a value list needs at least one value")
    return tuple(values)


def _parse_requirement(tokens: _Tokens) -> Requirement:
    token = tokens.take("a requirement")
    if token == "!":
        key = tokens.take("a label key after '!'")
        _check_key(key)
        return Requirement(key, Operator.DOES_NOT_EXIST)
    if token in {"=", "==", "!=", "(", ")", ","}:
        tokens.index -= 1
        raise SelectorError(f"expected a label key {tokens.where()}, found {token!r}")
    key = token
    _check_key(key)
    following = tokens.peek()
    if following is None or following == ",":
        return Requirement(key, Operator.EXISTS)
    tokens.take("an operator")
    if following in {"=", "=="}:
        value = tokens.peek()
        if value is None or value == ",":
            return Requirement(key, Operator.EQUALS, ("",))
        tokens.take("a value")
        _check_value(value)
        return Requirement(key, Operator.EQUALS, (value,))
    if following == "!=":
        value = tokens.peek()
        if value is None or value == ",":
            return Requirement(key, Operator.NOT_EQUALS, ("",))
        tokens.take("a value")
        _check_value(value)
        return Requirement(key, Operator.NOT_EQUALS, (value,))
    if following == "in":
        return Requirement(key, Operator.IN, _parse_values(tokens))
    if following == "notin":
        return Requirement(key, Operator.NOT_IN, _parse_values(tokens))
    tokens.index -= 1
    raise SelectorError(
        f"expected '=', '==', '!=', 'in' or 'notin' after {key!r} {tokens.where()}, "
        f"found {following!r}"
    )


def parse_selector(text: str) -> LabelSelector:
    """Parse a Kubernetes label selector; raise SelectorError saying what is wrong."""
    if len(text) > MAX_SELECTOR_LENGTH:
        raise SelectorError(f"is {len(text)} characters long (at most {MAX_SELECTOR_LENGTH})")
    tokens = _Tokens(text)
    requirements: list[Requirement] = []
    if tokens.peek() is None:
        return LabelSelector()
    while True:
        requirements.append(_parse_requirement(tokens))
        token = tokens.peek()
        if token is None:
            break
        if token != ",":
            raise SelectorError(f"expected ',' between requirements {tokens.where()}")
        tokens.take("','")
    return LabelSelector(tuple(requirements))
