"""Hypothesis generates invalid arguments; every one is refused clearly."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ninlayers import BlockSpec, NiN, NiNBlock, NiNClassifierHead

not_positive_int = st.one_of(
    st.integers(max_value=0),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.booleans(),
    st.none(),
    st.lists(st.integers(1, 3), min_size=3, max_size=3),
)
bad_words = st.text(min_size=1, max_size=8).filter(
    lambda s: s.lower() not in {"same", "valid", "channels_last", "channels_first"}
)


def refused(call, argument, value, exception=ValueError):
    with pytest.raises(exception) as info:
        call()
    message = str(info.value)
    assert f"`{argument}`" in message or argument in message
    assert re.search(r"Received: .*" + re.escape(argument.split()[0]), message) or (
        repr(value) in message
    ), message


@given(value=not_positive_int)
def test_block_filters_kernel_strides(value):
    refused(lambda: NiNBlock(value, 3), "filters", value)
    refused(lambda: NiNBlock(4, value), "kernel_size", value)
    refused(lambda: NiNBlock(4, 3, strides=value), "strides", value)


@given(value=bad_words)
def test_block_padding_and_data_format(value):
    refused(lambda: NiNBlock(4, 3, padding=value), "padding", value)
    refused(lambda: NiNBlock(4, 3, data_format=value), "data_format", value)


@given(value=st.text(max_size=8).map(lambda s: "no_such_" + s))
def test_unknown_activation(value):
    refused(lambda: NiNBlock(4, 3, activation=value), "activation", value)


@given(value=not_positive_int)
def test_head_and_model_classes(value):
    refused(lambda: NiNClassifierHead(value), "num_classes", value)
    refused(lambda: NiN(num_classes=value), "num_classes", value)


@given(
    spec=st.one_of(
        st.fixed_dictionaries({"filters": not_positive_int, "kernel_size": st.just(3)}),
        st.fixed_dictionaries({"filters": st.just(8), "kernel_size": not_positive_int}),
        st.fixed_dictionaries(
            {
                "filters": st.just(8),
                "kernel_size": st.just(3),
                "dropout": st.floats(1.0, 10.0),
            }
        ),
        st.dictionaries(
            st.sampled_from(["filters", "size", "kernel"]), st.integers(), max_size=2
        ),
        st.integers(),
        st.text(max_size=4),
        st.lists(st.integers(), max_size=1),
    )
)
def test_malformed_architecture_specs(spec):
    with pytest.raises(ValueError) as info:
        NiN(architecture=[spec], input_shape=(None, None, 1))
    assert "Received" in str(info.value)


@given(size=st.integers(1, 14), channels=st.integers(1, 4))
def test_too_small_inputs_name_the_minimum(size, channels):
    with pytest.raises(ValueError, match=r"at least 15x15 pixels") as info:
        NiN(input_shape=(size, 40, channels))
    assert "3x3/2 max pooling" in str(info.value)


@given(
    filters=st.integers(1, 64),
    kernel=st.integers(1, 7),
    strides=st.integers(1, 4),
    padding=st.sampled_from(["same", "valid", "SAME", "Valid"]),
)
def test_valid_arguments_are_accepted(filters, kernel, strides, padding):
    block = NiNBlock(filters, kernel, strides=strides, padding=padding)
    assert block.padding == padding.lower()
    assert BlockSpec(filters, kernel, strides, padding.lower()).filters == filters


not_a_bool = st.one_of(
    st.text(max_size=6), st.integers(), st.none(), st.floats(allow_nan=False)
)


@given(value=not_a_bool)
def test_booleans_must_be_booleans_not_strings_or_numbers(value):
    # bool("False") is True: a string must not pass for a boolean.
    for name in ("use_batch_norm", "head_final_activation", "test_time_flip"):
        refused(lambda n=name: NiN(**{n: value}), name, value)
    refused(lambda: NiNBlock(8, 3, use_batch_norm=value), "use_batch_norm", value)
    refused(lambda: NiNBlock(8, 3, final_activation=value), "final_activation", value)


@pytest.mark.parametrize("misspelled", ["num_class", "use_batchnorm", "classes"])
def test_misspelled_arguments_are_refused_not_ignored(misspelled):
    with pytest.raises(ValueError, match=f"unknown argument.*{misspelled}") as info:
        NiN(**{misspelled: 5})
    assert "num_classes" in str(info.value)  # the expected names are listed
    config = NiN(input_shape=(16, 16, 1), architecture=[(8, 3)]).get_config()
    with pytest.raises(ValueError, match=misspelled):
        NiN.from_config({**config, misspelled: 5})


@pytest.mark.parametrize("padding", ["VALID", "Valid", "SAME"])
def test_padding_in_any_case_counts_as_its_lower_case(padding):
    from ninlayers import minimum_input_size

    spec = BlockSpec(8, 3, padding=padding)
    assert spec.padding == padding.lower()
    lower = [{"filters": 8, "kernel_size": 3, "padding": padding.lower()}]
    given_case = [{"filters": 8, "kernel_size": 3, "padding": padding}]
    assert minimum_input_size(given_case) == minimum_input_size(lower)
