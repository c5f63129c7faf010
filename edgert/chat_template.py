"""Render a model's chat template (Jinja, as shipped in GGUF / tokenizer_config.json).

Templates come from model files, i.e. from outside, so they render in Jinja's immutable
sandbox: a template that reaches for Python internals raises ``TemplateError`` instead
of running. The sandbox alone stops attribute access, not work: a hostile template can
still loop for hours or build a string of gigabytes in one C call. So rendering also runs
under a budget: a time limit (checked at every loop iteration, call, attribute access and
operator), a size limit on every value and on the output, and size checks *before* the
operations that multiply (``*``, ``**``, ``%`` and ``format`` widths, ``replace``,
``indent``, ``join``, ``center`` ...).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
import functools
import json
import re
import threading
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from .errors import EdgertError

Message = Dict[str, str]
Prompt = Union[str, Sequence[Message]]

MAX_TEMPLATE_CHARS = 1 << 20  # real chat templates are a few kB
RENDER_TIMEOUT_S = 1.0  # real templates render in milliseconds
MAX_OUTPUT_CHARS = 1 << 20  # base size budget for any value and the output...
INPUT_FACTOR = 4  # ...plus this many times the characters of the messages
MAX_RANGE = 100_000  # jinja's own sandbox limit
MAX_INT_BITS = 4096  # results of ** beyond this are refused before they are computed
TICKS_PER_CLOCK_CHECK = 64

_ITER_GLOBAL = "_edgert_iter"
_CONCAT_GLOBAL = "_edgert_concat"
_RESERVED_PREFIX = "_edgert"
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_BRACE_FIELD = re.compile(r"\{[^{}]*\}")
_NESTED_FIELD = re.compile(r"\{[^{}]*\{")
_DIGITS = re.compile(r"\d+")
_PADDING_METHODS = ("center", "ljust", "rjust", "zfill", "expandtabs")
_WIDTH_FILTERS = ("center", "indent", "wordwrap", "truncate", "batch", "slice")


class TemplateError(EdgertError):
    """A chat template is invalid, unsafe, or raised an error while rendering."""


def _raise_exception(message: str) -> None:
    raise TemplateError(f"chat template refused the messages: {message}")


def _strftime_now(fmt: str) -> str:
    return _dt.datetime.now().strftime(fmt)


def _one_line(text: Any, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: message keys the template gets besides role and content (tool calling, as in transformers)
TOOL_KEYS = ("tool_calls", "tool_call_id", "name")


def message_ok(message: Any) -> bool:
    """A role and text content (an assistant's tool calls may come without content)."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        return False
    content = message.get("content")
    return isinstance(content, str) or (content is None and isinstance(message.get("tool_calls"), list))


def to_messages(prompt: Prompt, system: Optional[str] = None) -> List[Message]:
    """A plain string becomes one user message; a message list is checked and copied."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = []
        for index, message in enumerate(prompt):
            if not message_ok(message):
                raise TemplateError(
                    f"message {index}: expected {{'role': str, 'content': str}}, found {_one_line(repr(message), 120)}"
                )
            copy = {"role": message["role"], "content": message["content"]}
            copy.update({k: message[k] for k in TOOL_KEYS if message.get(k) is not None})
            messages.append(copy)
    if system is not None and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system})
    return messages


class _Budget:
    """Time and size limits of one render."""

    def __init__(self, timeout_s: float, max_chars: int):
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.max_chars = max_chars
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks % TICKS_PER_CLOCK_CHECK == 0 and time.monotonic() > self.deadline:
            raise TemplateError(
                f"chat template refused: expected rendering within {self.timeout_s:g} s, "
                f"found it still running after {self.ticks} steps (unbounded loop or recursion?)"
            )

    def size(self, n: int, what: str) -> None:
        if n > self.max_chars:
            raise TemplateError(
                f"chat template refused: {what} would be {n} items, expected at most {self.max_chars}"
            )

    def value(self, value: Any, what: str = "a value") -> Any:
        if isinstance(value, (str, bytes, list, tuple, dict)):
            self.size(len(value), what)
        return value

    def format_string(self, fmt: str, what: str, percent: bool) -> None:
        """Refuse widths/precisions beyond the budget ('%0999999999d', '{:>999999999}') and
        widths taken from the arguments ('%*d', '{:{}}') before the string is built."""
        if percent:
            specs = [g for m in _PERCENT_SPEC.finditer(fmt) for g in m.groups() if g]
        else:
            plain = fmt.replace("{{", "").replace("}}", "")
            if _NESTED_FIELD.search(plain):
                specs = ["*"]
            else:
                specs = [d for field in _BRACE_FIELD.findall(plain) for d in _DIGITS.findall(field)]
        for spec in specs:
            if spec == "*":
                raise TemplateError(f"chat template refused: {what} takes a width from its arguments")
            if len(spec) > 9 or int(spec) > self.max_chars:
                raise TemplateError(
                    f"chat template refused: {what} has a width or precision of {spec[:12]}, "
                    f"expected at most {self.max_chars}"
                )


def _length(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return 0


def _precheck_filter(budget: _Budget, name: str, args: tuple, kwargs: dict) -> None:
    """Size checks before the built-in filters that can multiply their input."""
    value, rest = (args[0] if args else None), args[1:]
    for arg in list(rest) + list(kwargs.values()) if name in _WIDTH_FILTERS else ():
        if isinstance(arg, int) and not isinstance(arg, bool) and arg > budget.max_chars:
            raise TemplateError(
                f"chat template refused: filter {name!r} got {arg}, expected at most {budget.max_chars}"
            )
    if name == "replace" and isinstance(value, str) and len(rest) >= 2:
        old, new = str(rest[0]), str(rest[1])
        count = value.count(old) if old else len(value) + 1
        if len(rest) > 2 and isinstance(rest[2], int) and rest[2] >= 0:
            count = min(count, rest[2])
        budget.size(len(value) + count * len(new), "the result of replace")
    elif name == "indent" and isinstance(value, str):
        width = (rest[0] if rest else kwargs.get("width", 4))
        width = width if isinstance(width, int) else len(str(width))
        budget.size(len(value) + (value.count("\n") + 1) * max(width, 0), "the result of indent")
    elif name == "wordwrap" and isinstance(value, str):
        width = rest[0] if rest else kwargs.get("width", 79)
        wrap = kwargs.get("wrapstring") or (rest[2] if len(rest) > 2 else None) or "\n"
        lines = len(value) // max(int(width) if isinstance(width, int) else 1, 1) + value.count("\n") + 1
        budget.size(len(value) + lines * len(str(wrap)), "the result of wordwrap")
    elif name == "join":
        separator = rest[0] if rest else kwargs.get("d", "")
        budget.size(_length(value) * len(str(separator)), "the result of join")
    elif name == "format" and isinstance(value, str):
        budget.format_string(value, "the format filter", percent=True)


def _guard_filter(env: "_GuardedEnvironment", name: str, func: Callable) -> Callable:
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0  # context/environment first

    @functools.wraps(func)  # keeps jinja_pass_arg
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = env.budget()
        budget.tick()
        _precheck_filter(budget, name, args[skip:], kwargs)
        return budget.value(func(*args, **kwargs), f"the result of filter {name!r}")

    return guarded


def _make_environment():
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

    class _GuardedEnvironment(ImmutableSandboxedEnvironment):
        """The immutable sandbox, with unsafe attributes refused at once and a per-render budget."""

        intercepted_binops = frozenset(["*", "**", "%", "+", "-", "/", "//"])

        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            self._local = threading.local()
            self.filters = {name: _guard_filter(self, name, f) for name, f in self.filters.items()}
            self.globals.pop("lipsum", None)  # generates text of any length; no template needs it
            self.globals["range"] = self._range
            self.globals[_ITER_GLOBAL] = self._iterate
            self.globals[_CONCAT_GLOBAL] = self._concat

        def budget(self) -> _Budget:
            budget = getattr(self._local, "budget", None)
            if budget is None:
                raise TemplateError("chat template used outside ChatTemplate.render")
            return budget

        def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
            raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")

        def _range(self, *args: Any) -> range:
            result = range(*args)
            if len(result) > MAX_RANGE:
                raise TemplateError(
                    f"chat template refused: range of {len(result)} items, expected at most {MAX_RANGE}"
                )
            return result

        def _iterate(self, iterable: Iterable) -> Iterator:
            budget = self.budget()
            for item in iterable:
                budget.tick()
                yield item

        def _concat(self, *parts: Any) -> str:
            budget = self.budget()
            budget.tick()
            texts = [p if isinstance(p, str) else str(p) for p in parts]
            budget.size(sum(len(t) for t in texts), "a string built with '~'")
            return "".join(texts)

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            budget = self.budget()
            budget.tick()
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int):
                        budget.size(len(seq) * max(n, 0), "the result of '*'")
            elif operator == "**" and isinstance(left, int) and isinstance(right, int):
                if abs(left) > 1 and right > 0 and right * abs(left).bit_length() > MAX_INT_BITS:
                    raise TemplateError(
                        f"chat template refused: {left} ** {right} has more than {MAX_INT_BITS} bits"
                    )
            elif operator == "%" and isinstance(left, str):
                budget.format_string(left, "a '%' format", percent=True)
            return budget.value(super().call_binop(context, operator, left, right), f"the result of {operator!r}")

        def getattr(self, obj: Any, attribute: str) -> Any:
            budget = self.budget()
            budget.tick()
            return budget.value(super().getattr(obj, attribute))

        def getitem(self, obj: Any, argument: Any) -> Any:
            budget = self.budget()
            budget.tick()
            return budget.value(super().getitem(obj, argument))

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            budget = __self.budget()
            budget.tick()
            owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
            if isinstance(owner, (str, bytes)):
                name = getattr(__obj, "__name__", "")
                for arg in list(args) + list(kwargs.values()) if name in _PADDING_METHODS else ():
                    if isinstance(arg, int) and not isinstance(arg, bool) and arg > budget.max_chars:
                        raise TemplateError(
                            f"chat template refused: str.{name} got {arg}, expected at most {budget.max_chars}"
                        )
                if name in ("format", "format_map") and isinstance(owner, str):
                    budget.format_string(owner, "str.format", percent=False)
                elif name == "replace" and len(args) >= 2:
                    count = owner.count(args[0]) if args[0] else len(owner) + 1
                    budget.size(len(owner) + count * _length(args[1]), "the result of replace")
                elif name == "join" and args:
                    budget.size(_length(args[0]) * len(owner), "the result of join")
            for arg in list(args) + list(kwargs.values()):
                budget.value(arg, "an argument")
            return budget.value(super().call(__context, __obj, *args, **kwargs), "the result of a call")

    return _GuardedEnvironment


def _instrument(tree: Any) -> Any:
    """Route every for-loop's iterable and every '~' through the budget (Jinja has no hook for them)."""
    from jinja2 import nodes
    from jinja2.visitor import NodeTransformer

    def call(name: str, args: list) -> Any:
        return nodes.Call(nodes.Name(name, "load"), args, [], None, None)

    class Instrument(NodeTransformer):
        def visit_For(self, node: Any) -> Any:
            node = self.generic_visit(node)
            node.iter = call(_ITER_GLOBAL, [node.iter])
            return node

        def visit_Concat(self, node: Any) -> Any:
            node = self.generic_visit(node)
            return call(_CONCAT_GLOBAL, node.nodes)

    return Instrument().visit(tree)


class ChatTemplate:
    """A compiled, sandboxed chat template with a render budget."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "", timeout_s: float = RENDER_TIMEOUT_S):
        from jinja2 import TemplateSyntaxError

        if not isinstance(source, str):
            raise TemplateError(f"chat template: expected text, found {type(source).__name__}")
        if len(source) > MAX_TEMPLATE_CHARS:
            raise TemplateError(
                f"chat template is {len(source)} characters, expected at most {MAX_TEMPLATE_CHARS}"
            )
        if _RESERVED_PREFIX in source:
            raise TemplateError(f"chat template refused: names starting with {_RESERVED_PREFIX!r} are reserved")
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.timeout_s = timeout_s
        # as transformers renders them: loop controls on, tojson without HTML escaping
        env = _make_environment()(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = functools.partial(json.dumps, ensure_ascii=False)  # transformers' tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        self._env = env
        try:
            tree = _instrument(env.parse(source))
            self._template = env.template_class.from_code(env, env.compile(tree), env.make_globals(None), None)
        except TemplateSyntaxError as exc:
            raise TemplateError(
                f"chat template is not valid Jinja: {_one_line(exc.message)} (line {exc.lineno})"
            ) from None
        except (RecursionError, MemoryError):
            raise TemplateError("chat template is not valid Jinja: nested too deeply to compile") from None
        except Exception as exc:  # the compiler on hostile input (SyntaxError from Python, ...)
            raise TemplateError(f"chat template could not be compiled: {type(exc).__name__}: {_one_line(exc)}") from None

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True, **extra: Any) -> str:
        from jinja2.exceptions import SecurityError

        messages = list(messages)
        input_chars = sum(len(str(v)) for m in messages if isinstance(m, dict) for v in m.values())
        budget = _Budget(self.timeout_s, MAX_OUTPUT_CHARS + INPUT_FACTOR * input_chars)
        self._env._local.budget = budget
        try:
            chunks: List[str] = []
            total = 0
            for chunk in self._template.generate(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            ):
                total += len(chunk)
                budget.size(total, "the rendered prompt")
                budget.tick()
                chunks.append(chunk)
            return "".join(chunks)
        except TemplateError:
            raise
        except SecurityError as exc:
            raise TemplateError(f"chat template refused: it tried an unsafe operation ({_one_line(exc)})") from None
        except RecursionError:
            raise TemplateError("chat template refused: recursion too deep") from None
        except MemoryError:
            raise TemplateError("chat template refused: it ran out of memory") from None
        except Exception as exc:  # jinja's own errors and whatever Python raises inside the template
            raise TemplateError(f"chat template failed to render: {type(exc).__name__}: {_one_line(exc)}") from None
        finally:
            self._env._local.budget = None


@dataclass(frozen=True)
class ThinkingFormat:
    """How a thinking segment opens and how the runtime closes it to force the answer."""

    open: str
    close: str
    stop: Tuple[str, ...]

    @classmethod
    def for_template(cls, chat_template: Optional[str]) -> "ThinkingFormat":
        if chat_template and "<think>" in chat_template:  # models trained to think (Qwen3, DeepSeek-R1 ...)
            return cls("<think>\n", "\n</think>\n\n", ("</think>",))
        # any other model: a step-by-step segment, closed by a forced answer phrase (s1-style)
        return cls("Let's think step by step.", "\nTherefore, the final answer is", ("final answer", "Question:"))
