"""Chat templates come from model files: ones that reach for Python internals, loop
without end or build huge values are refused with a one-line TemplateError, quickly and
without allocating the huge value; real templates still render."""

import time
import tracemalloc

import pytest

from edgert.chat_template import ChatTemplate, TemplateError

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]

INTERNALS = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ self._TemplateReference__context.environment }}",
    "{{ messages.__len__() }}",
    "{{ raise_exception.__globals__ }}",
    "{{ (messages|first).__class__ }}",
    "{{ messages.append({'role': 'x', 'content': 'y'}) }}",
    "{{ ''.format.__globals__ }}",
    "{% set x = ''['__class__'] %}{{ x.__base__ }}",
]

BLOWUPS = [
    "{{ range(10**10) }}",
    "{{ range(10**10)|list }}",
    "{{ 'a' * 10**9 }}",
    "{{ [1] * 10**9 }}",
    "{{ (10**10) ** (10**10) }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{% for m in messages %}{% for i in range(100000) %}{% for j in range(100000) %}{{ m.role }}{% endfor %}{% endfor %}{% endfor %}",
    "{% set ns = namespace(s='a') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "{% set ns = namespace(s='a') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s|length }}{% endif %}{% endmacro %}{{ d('a', 64) }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '%*d' % (999999999, 1) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '{:.999999999f}'.format(1.0) }}",
    "{{ '{:{}}'.format(1, 999999999) }}",
    "{{ 'a'.center(999999999) }}",
    "{{ 'a'.ljust(999999999) }}",
    "{{ 'x'|center(999999999) }}",
    "{{ 'x'|indent(999999999) }}",
    "{{ '%s'|format('a') ~ '%0999999999d'|format(1) }}",
    "{{ 'ab'|replace('a', 'aaaaaaaaaaaaaaaa')|replace('a', 'aaaaaaaaaaaaaaaa')|replace('a', 'aaaaaaaaaaaaaaaa')"
    "|replace('a', 'aaaaaaaaaaaaaaaa')|replace('a', 'aaaaaaaaaaaaaaaa')|replace('a', 'aaaaaaaaaaaaaaaa') }}",
    "{{ ('x' * 1000000).replace('x', 'yyyyyyyyyy') }}",
    "{% set a = 'x' * 1000000 %}{{ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a }}",
    "{{ ([1] * 1000000)|join('x' * 1000) }}",
    "{{ ('x' * 1000) .join(['y'] * 1000000) }}",
    "{{ [0]|batch(999999999, 'x')|list }}",
    "{{ lipsum(10**6) }}",
]

ERRORS = [
    "{{ 1 / 0 }}",
    "{{ 1 + 'a' }}",
    "{{ messages[0]['content'] + 1 }}",
    "{% for x in 5 %}{% endfor %}",
    "{{ raise_exception('no tools allowed') }}",
]


def refused_quickly(source: str, limit_s: float = 2.0) -> TemplateError:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(TemplateError) as caught:
            ChatTemplate(source).render(MESSAGES)
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400, message
    assert elapsed < limit_s, f"{elapsed:.2f} s"
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MB"
    return caught.value


@pytest.mark.parametrize("source", INTERNALS)
def test_python_internals_are_refused(source):
    error = refused_quickly(source, limit_s=0.5)
    assert "unsafe" in str(error)


@pytest.mark.parametrize("source", BLOWUPS)
def test_unbounded_work_and_huge_values_are_refused(source):
    error = refused_quickly(source)
    assert "refused" in str(error) or "undefined" in str(error)


@pytest.mark.parametrize("source", ERRORS)
def test_errors_inside_templates_become_template_errors(source):
    refused_quickly(source, limit_s=0.5)


def test_the_time_budget_is_a_parameter():
    start = time.perf_counter()
    with pytest.raises(TemplateError, match="expected rendering within 0.1 s"):
        ChatTemplate("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                     timeout_s=0.1).render([])
    assert time.perf_counter() - start < 0.6


def test_bad_sources_are_refused_at_compile_time():
    for source in ["{% for %}", "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "x" * (2 << 20), "{{ _edgert_iter }}"]:
        with pytest.raises(TemplateError):
            ChatTemplate(source)


CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_real_templates_still_render():
    assert ChatTemplate(CHATML).render(MESSAGES) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    rich = ("{%- set ns = namespace(sys='') -%}{%- for m in messages -%}{%- if m.role == 'system' -%}"
            "{%- set ns.sys = ns.sys ~ m.content -%}{%- endif -%}{%- endfor -%}"
            "[{{ ns.sys|upper }}]{% for m in messages if m.role != 'system' %}{{ loop.index }}:{{ m.content|trim }}"
            "{{ '%s/%d' % (m.role, loop.length) }}{{ '{}|{:>4}'.format(m.role, 12) }}{% endfor %}"
            "{{ messages|map(attribute='role')|join(',') }}{{ (messages|length) * 2 }}{{ 'x' * 3 }}"
            "{{ 'a-b'.replace('-', '+') }}{{ bos_token }}{{ 10**12 }}")
    assert ChatTemplate(rich, bos_token="<s>").render(MESSAGES) == (
        "[BE BRIEF.]1:Hiuser/1user|  12system,user4xxxa+b<s>1000000000000")


def test_long_conversations_fit_the_budget():
    long = [{"role": "user", "content": "word " * 200_000}, {"role": "assistant", "content": "ok"}] * 3
    start = time.perf_counter()
    text = ChatTemplate(CHATML).render(long)
    assert len(text) > 3_000_000 and time.perf_counter() - start < 1.0


def test_real_smollm2_template_renders_like_before(smollm2_path):
    from edgert.formats.gguf import read_header

    template = ChatTemplate(read_header(smollm2_path).chat_template)
    text = template.render(MESSAGES)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>") and text.endswith("<|im_start|>assistant\n")
