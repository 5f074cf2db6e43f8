"""The inference copy of a torch model: same outputs, folded layers, rebuilt when trained."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from pathray.units.trainable import cached_inference_module, inference_module
from pipelines.nuclei.unet import build_unet


def _unet() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_unet((8, 16, 32))
    for module in net.modules():  # statistics far from the identity, so folding matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    return net.eval()


def test_the_inference_copy_gives_the_eager_outputs_without_batch_norms() -> None:
    net = _unet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = inference_module(net)
    x = torch.rand(3, 3, 64, 64)
    with torch.inference_mode():
        want, got = net(x), fast(x)
        # A (N, H, W, C) batch permuted to NCHW, as the units feed it.
        nhwc = fast(x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2))
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(nhwc, want, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_a_module_in_training_mode_keeps_its_batch_norms() -> None:
    net = _unet().train()
    fast = inference_module(net)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())


def test_the_cached_copy_follows_training_steps_and_new_models() -> None:
    unit = SimpleNamespace(model_=_unet())
    first = cached_inference_module(unit)
    assert cached_inference_module(unit) is first
    with torch.no_grad():  # an optimiser step: parameters changed in place
        next(unit.model_.parameters()).add_(0.1)
    second = cached_inference_module(unit)
    assert second is not first
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(second(x), unit.model_(x), atol=1e-5)
        assert not torch.allclose(first(x), unit.model_(x), atol=1e-5)
    unit.model_ = _unet()
    assert cached_inference_module(unit) is not second


def test_bfloat16_units_autocast_and_agree_with_float32() -> None:
    import numpy as np
    import pytest

    from pathray.errors import ConfigError
    from pipelines.nuclei.unet import NucleusUNet

    config = {"channels": (8, 16, 32), "iterations": 1, "crop_size": 32, "device": "cpu"}
    fp32, bf16 = NucleusUNet(config), NucleusUNet({**config, "precision": "bfloat16"})
    bf16.model_ = fp32.model_ = _unet()
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    want, got = fp32.predict_maps(images), bf16.predict_maps(images)
    assert got.dtype == want.dtype == np.float32
    assert not np.array_equal(got, want)  # it really ran in bfloat16
    assert np.abs(got - want).max() < 0.05
    with pytest.raises(ConfigError, match="precision: Input should be 'float32' or 'bfloat16'"):
        NucleusUNet({**config, "precision": "float16"})


def test_the_forward_pass_is_sized_to_the_cpu_caches_without_changing_the_maps() -> None:
    import numpy as np

    from pathray.units.trainable import forward_pass_size
    from pipelines.nuclei.unet import NucleusUNet

    config = {"channels": (8, 16, 32), "iterations": 1, "crop_size": 32, "device": "cpu"}
    auto, single, whole = (NucleusUNet({**config, "infer_batch": k}) for k in (None, 1, 5))
    images = np.random.default_rng(1).integers(0, 256, (5, 256, 256, 3), dtype=np.uint8)
    passes: dict[str, list[int]] = {}
    for name, unit in (("auto", auto), ("single", single), ("whole", whole)):
        unit.model_ = _unet()
        sizes = passes.setdefault(name, [])
        cached_inference_module(unit).register_forward_hook(
            lambda _m, args, _out, sizes=sizes: sizes.append(args[0].shape[0])
        )
    want = whole.predict_maps(images)
    # 256 x 256 x 8 float32 values are 2 MiB: two tiles fill the 4 MiB pass.
    assert forward_pass_size(auto, 256 * 256 * 8, batch=5) == 2
    for unit in (auto, single):
        assert np.allclose(unit.predict_maps(images), want, atol=1e-5)
    assert passes == {"auto": [2, 2, 1], "single": [1] * 5, "whole": [5]}
    gpu = SimpleNamespace(config=SimpleNamespace(precision="float32"), _device="cuda")
    assert forward_pass_size(gpu, 256 * 256 * 8, batch=5) == 5


def test_concurrent_first_inferences_of_a_fresh_unit_all_succeed_alike() -> None:
    """Issue 23 item 3: eight threads making a fresh unit's first call at once.

    Building the inference copy with torch.fx patched ``nn.Module.__call__`` process-wide, so the
    other threads' calls failed ('module is not installed as a submodule') and the patch could
    stay for good. Now they all succeed, share one copy and agree bit for bit.
    """
    import threading

    import numpy as np

    from pipelines.nuclei.unet import NucleusUNet

    config = {"channels": (8, 16, 32), "iterations": 1, "crop_size": 32, "device": "cpu"}
    unit = NucleusUNet(config)
    unit.model_ = _unet()
    images = np.random.default_rng(2).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    n = 8
    start = threading.Barrier(n)
    outputs: list[np.ndarray | BaseException | None] = [None] * n

    def first_call(i: int) -> None:
        start.wait()
        try:
            outputs[i] = unit.predict_maps(images)
        except Exception as exc:  # recorded: the assertion below names it
            outputs[i] = exc

    threads = [threading.Thread(target=first_call, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failures = [repr(o) for o in outputs if not isinstance(o, np.ndarray)]
    assert not failures, failures
    assert all(np.array_equal(o, outputs[0]) for o in outputs)  # type: ignore[arg-type]
    assert torch.nn.Module.__call__ is torch.nn.Module._wrapped_call_impl  # nothing left patched
    assert unit.predict_maps(images).shape == outputs[0].shape  # type: ignore[union-attr]
