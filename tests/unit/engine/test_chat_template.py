import pytest

from edgellm.engine.chat_template import (
    CHATML_TEMPLATE,
    ChatTemplate,
    arguments_object,
    message_text,
)
from edgellm.errors import InvalidRequestError


def test_fallback_is_chatml_with_generation_prompt() -> None:
    tpl = ChatTemplate(None, bos_token="<s>", eos_token="</s>")
    assert tpl.is_fallback and tpl.source == CHATML_TEMPLATE
    out = tpl.render([{"role": "user", "content": "hi"}])
    assert out == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_template_sees_bos_and_raise_exception() -> None:
    src = (
        "{{ bos_token }}{% for m in messages %}"
        "{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}"
    )
    tpl = ChatTemplate(src, bos_token="<bos>", eos_token="<eos>")
    assert tpl.render([{"role": "user", "content": "x"}]) == "<bos>x"
    with pytest.raises(InvalidRequestError, match="no system role"):
        tpl.render([{"role": "system", "content": "x"}])


def test_content_parts_are_joined_and_images_refused() -> None:
    assert message_text([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == "ab"
    assert message_text(None) == ""
    with pytest.raises(InvalidRequestError):
        message_text([{"type": "image_url", "image_url": {"url": "x"}}])


def test_broken_template_is_a_client_error() -> None:
    tpl = ChatTemplate("{% for %}", bos_token="", eos_token="")
    with pytest.raises(InvalidRequestError, match="chat template"):
        tpl.render([{"role": "user", "content": "x"}])


def test_gemma_models_without_template_get_gemma_turns() -> None:
    tpl = ChatTemplate(None, bos_token="<bos>", eos_token="<eos>", architecture="gemma3")
    out = tpl.render(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": " Hi "},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Bye"},
        ]
    )
    assert out == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )


def test_tool_call_arguments_become_the_object_their_json_encodes() -> None:
    """One conversion for the template's history and the generic tool format's (wire/tools)."""
    assert arguments_object('{"city": "Oslo", "days": [1, 2]}') == {"city": "Oslo", "days": [1, 2]}
    assert arguments_object({"city": "Oslo"}) == {"city": "Oslo"}  # already an object
    assert arguments_object("city=Oslo") == "city=Oslo"  # not JSON: kept as the client sent it
