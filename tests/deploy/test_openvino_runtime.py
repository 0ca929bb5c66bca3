"""The OpenVINO CPU setup that the evaluator and the benchmarks share."""
from repnext_mm.deploy.openvino_runtime import openvino_model
from tests.helpers import requires_onnxruntime, requires_openvino


@requires_onnxruntime  # tiny_onnx's export
@requires_openvino
def test_openvino_is_pinned_to_fp32_single_stream_latency_and_the_threads(tiny_onnx):
    import openvino as ov

    compiled = openvino_model(tiny_onnx[2], threads=2)
    # Without the pin, OpenVINO runs bf16 on CPUs with AVX512_BF16 or AMX.
    assert compiled.get_property('INFERENCE_PRECISION_HINT') == ov.Type.f32
    assert compiled.get_property('INFERENCE_NUM_THREADS') == 2
    assert str(compiled.get_property('PERFORMANCE_HINT')) == 'LATENCY'
    assert compiled.get_property('NUM_STREAMS') == 1
