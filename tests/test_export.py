"""Issue 5: export round trip, predictor/ONNX agreement, predict on real MNIST digits as PNG files."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import paddle
import pytest
from PIL import Image

from paddle_lenet.config import load_config
from paddle_lenet.data import load_split
from paddle_lenet.engine import Experiment
from paddle_lenet.export import make_predictor, run_predictor

from .conftest import MNIST5K, ROOT, mnist_args, tool

try:
    import onnxruntime  # noqa: F401
    import paddle2onnx  # noqa: F401

    HAVE_ONNX = True
except ImportError:
    HAVE_ONNX = False


@pytest.fixture(scope="module")
def exported(trained: str, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("export") / "lenet")
    p = tool("export", *mnist_args(trained, "lenet"), "--out", out, check=True)
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert report["paddle_inference_max_abs_diff"] < 1e-4
    if HAVE_ONNX:
        assert report["onnxruntime_max_abs_diff"] < 1e-4
    else:
        assert report["onnx"].startswith("skipped")
    return out


def test_export_files(exported: str) -> None:
    assert {"model.json", "model.pdiparams", "meta.json"} <= set(os.listdir(exported))
    assert ("model.onnx" in os.listdir(exported)) == HAVE_ONNX
    meta = json.load(open(os.path.join(exported, "meta.json")))
    assert meta["input_shape"] == [1, 28, 28] and meta["model"] == "LeNet"


def test_predictor_matches_dygraph_with_dynamic_batch(trained: str, exported: str) -> None:
    cfg = load_config(os.path.join(ROOT, "configs/lenet.yml"), mnist_args(trained, "lenet")[3::2])
    exp = Experiment(cfg, load_train=False)
    exp.net.set_state_dict(paddle.load(os.path.join(trained, "lenet", "checkpoints", "final.pdparams")))
    exp.net.eval()
    pred = make_predictor(exported)
    for n in (1, 7, 100):
        x = exp.test_data.images[:n]
        ref = exp.net(paddle.to_tensor(x)).numpy()
        got = run_predictor(pred, x)
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, ref, atol=1e-4)
        assert (got.argmax(1) == ref.argmax(1)).all()
    if not HAVE_ONNX:
        pytest.skip("the [onnx] extra is not installed: pip install -e '.[onnx]'")
    import onnxruntime as ort

    sess = ort.InferenceSession(os.path.join(exported, "model.onnx"), providers=["CPUExecutionProvider"])
    x = exp.test_data.images[:33]
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0], run_predictor(pred, x), atol=1e-4)


def test_predict_real_digits_from_png(exported: str, tmp_path) -> None:
    data = load_split("MNIST", MNIST5K, "test")
    files = []
    for i in range(40):
        path = tmp_path / f"digit_{i}.png"
        Image.fromarray((data.images[i, 0] * 255).round().astype("uint8"), mode="L").save(path)
        files.append(str(path))
    big = tmp_path / "big_rgb.jpg"  # other size and mode: converted exactly as in training
    Image.fromarray((data.images[0, 0] * 255).astype("uint8")).convert("RGB").resize((84, 84)).save(big, quality=95)
    p = tool("predict", "--model-dir", exported, "--json", *files, str(big), check=True)
    rows = [json.loads(line) for line in p.stdout.strip().splitlines()]
    assert len(rows) == 41 and all({"file", "top1", "probs"} <= set(r) for r in rows)
    assert all(abs(sum(r["probs"]) - 1) < 1e-3 for r in rows)
    top1 = np.array([r["top1"] for r in rows[:40]])
    assert (top1 == data.labels[:40, 0]).mean() >= 0.85
    assert rows[40]["top1"] == rows[0]["top1"]
    text = tool("predict", "--model-dir", exported, files[0], check=True).stdout
    assert text.startswith(files[0] + ": ")


def test_predict_bad_input(exported: str, tmp_path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    for args, needle in (([str(bad)], "cannot read image"),
                         (["--model-dir", str(tmp_path / "none"), str(bad)], "does not exist")):
        if args[0] != "--model-dir":
            args = ["--model-dir", exported, *args]
        p = tool("predict", *args)
        assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "meta.json").write_text(json.dumps({"input_shape": [3, 32, 32], "color": "RGB", "scale": 1 / 255,
                                                          "num_classes": 10, "class_names": None}))
    for f in ("model.json", "model.pdiparams"):
        (broken / f).write_bytes(open(os.path.join(exported, f), "rb").read())
    img = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(img)
    p = tool("predict", "--model-dir", str(broken), str(img))
    assert p.returncode == 2 and "does not accept" in p.stderr and "Traceback" not in p.stderr, p.stderr[-1500:]


def test_predict_decodes_images_as_a_viewer_shows_them(exported: str, tmp_path) -> None:
    """EXIF rotation applied, 16-bit PNG and float TIFF scaled to their full range, a FIFO refused at once, a
    tampered meta.json and a training run folder named in one line."""
    data = load_split("MNIST", MNIST5K, "test")
    digit = (data.images[3, 0] * 255).round().astype("uint8")
    Image.fromarray(digit, mode="L").save(tmp_path / "ref.png")
    deep = Image.fromarray(digit.astype("<u2") * 257)  # 16-bit grayscale, 0–65535
    assert deep.mode.startswith("I;16")
    deep.save(tmp_path / "deep.png")
    Image.fromarray(digit.astype("float32") / 255).save(tmp_path / "float.tiff")  # mode F, 0–1
    rotated = Image.fromarray(digit, mode="L").rotate(90, expand=True)  # stored sideways, EXIF says "turn back"
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.convert("RGB").save(tmp_path / "phone.jpg", exif=exif, quality=100)
    p = tool("predict", "--model-dir", exported, "--json", *(str(tmp_path / f) for f in
             ("ref.png", "deep.png", "float.tiff", "phone.jpg")), check=True)
    ref, deep, flt, phone = [json.loads(line) for line in p.stdout.strip().splitlines()]
    np.testing.assert_allclose(deep["probs"], ref["probs"], atol=2e-3)
    np.testing.assert_allclose(flt["probs"], ref["probs"], atol=2e-3)
    assert phone["top1"] == ref["top1"]
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    p = tool("predict", "--model-dir", exported, str(fifo), timeout=60)
    assert p.returncode == 2 and "not a regular file" in p.stderr
    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    meta = json.load(open(bad / "meta.json"))
    for field, value in (("input_shape", [28, 28]), ("class_names", ["a"]), ("scale", "1/255")):
        json.dump({**meta, field: value}, open(bad / "meta.json", "w"))
        p = tool("predict", "--model-dir", str(bad), str(tmp_path / "ref.png"))
        assert p.returncode == 2 and "meta.json" in p.stderr and len(p.stderr.strip().splitlines()) == 1, field
    json.dump(meta, open(bad / "meta.json", "w"))
    (bad / "model.pdiparams").write_bytes((bad / "model.pdiparams").read_bytes()[:100])
    p = tool("predict", "--model-dir", str(bad), str(tmp_path / "ref.png"))
    assert p.returncode == 2 and "damaged" in p.stderr and "Traceback" not in p.stderr
    white = tmp_path / "drawing.png"
    Image.fromarray(255 - digit, mode="L").save(white)
    assert "try --invert" in tool("predict", "--model-dir", exported, str(white), check=True).stdout
