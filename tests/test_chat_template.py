import pytest

from edgert.chat_template import ChatTemplate, TemplateError, to_messages


def test_renders_messages_and_generation_prompt():
    template = ChatTemplate(
        "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}",
        bos_token="<s>",
    )
    assert template.render(to_messages("hi", system="sys")) == "<s>[system]sys[user]hi[assistant]"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__class__.__init__.__globals__ }}",
        "{% set x = messages.append({'role': 'x', 'content': 'y'}) %}{{ x }}",
    ],
)
def test_templates_reaching_for_python_internals_are_refused(source):
    with pytest.raises(TemplateError, match="unsafe"):
        ChatTemplate(source).render(to_messages("hi"))


def test_raise_exception_and_syntax_errors_are_template_errors():
    with pytest.raises(TemplateError, match="only user"):
        ChatTemplate("{{ raise_exception('only user') }}").render([])
    with pytest.raises(TemplateError, match="not valid Jinja"):
        ChatTemplate("{% for %}")


def test_bad_messages():
    with pytest.raises(TemplateError, match="message 0"):
        to_messages([{"role": "user"}])
