"""repnext_mm/deploy/onnx_runtime.py: the one ONNX Runtime session, and the call that runs it."""
import torch

from repnext_mm.deploy.onnx_runtime import onnxruntime_call, onnxruntime_session
from tests.helpers import requires_onnxruntime


@requires_onnxruntime
def test_the_call_feeds_the_graphs_own_input_and_uses_the_threads(tmp_path):
    model = torch.nn.Conv2d(3, 4, 3).eval()
    x = torch.randn(1, 3, 8, 8)
    path = tmp_path / 'conv.onnx'
    torch.onnx.export(model, (x,), str(path), input_names=['pixels'], opset_version=17,
                      dynamo=False)
    (out,) = onnxruntime_call(path)(x.numpy())
    torch.testing.assert_close(torch.from_numpy(out), model(x).detach(), rtol=1e-4, atol=1e-5)
    options = onnxruntime_session(path, threads=1).get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
