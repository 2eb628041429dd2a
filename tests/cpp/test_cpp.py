"""engine/cpp: the C++17 reader and OpenVINO runner, built once per session with CMake and run as a user would.

Skipped, with the reason, where cmake or g++ is absent or CMake stops on a missing dependency (its own message
names the Debian package or the openvino wheel command).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from bit_trt.engine import compare
from bit_trt.engine.cpu_host import this_host
from tests.engine.test_compute_gate import plant_failure

pytestmark = pytest.mark.cpp

SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "engine", "cpp")
TOOLS = ("bit-classify-cpp", "bit-check-cpp", "bit-cpp-probe")


def _cmake_error(output: str) -> str:
    """CMake's FATAL_ERROR message (ours names what to install), else its last lines."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("CMake Error"):
            return " ".join(lines[i + 1 : i + 4])[:400]
    return " ".join(lines[-3:])[:400]


@pytest.fixture(scope="session")
def cpp_build(tmp_path_factory):
    """The Release build directory holding the three executables; skips when the toolchain is absent."""
    for tool in ("cmake", "g++"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (apt-get install -y cmake g++)")
    build = tmp_path_factory.mktemp("cpp-build")
    # The openvino wheel of the interpreter running the tests (the CMakeLists also finds the repository's .venv).
    configure = ["cmake", "-S", SOURCE, "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"]
    configure.append(f"-DBIT_PYTHON={sys.executable}")
    done = subprocess.run(configure, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"engine/cpp cannot be configured here: {_cmake_error(done.stdout + done.stderr)}")
    start = time.perf_counter()
    done = subprocess.run(
        ["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2)], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    warnings = [line for line in (done.stdout + done.stderr).splitlines() if "warning:" in line]
    assert not warnings, "\n".join(warnings)  # -Wall -Wextra clean
    print(f"engine/cpp built in {time.perf_counter() - start:.1f} s")
    return build


def run(build, tool, *args, timeout=300, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(build / tool), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )


def one_error_line(done: subprocess.CompletedProcess, prog: str) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1, done.stderr
    if prog == "bit-check-cpp":  # nothing else: no usage text, no native library noise
        assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and "terminate" not in done.stderr
    return errors[0]


@pytest.fixture(scope="session")
def pngs(tmp_path_factory):
    """PNGs of several sizes and kinds (RGB, gray, RGBA; smaller, larger, equal to and off the 64x64 input)."""
    import cv2

    out = tmp_path_factory.mktemp("cpp-images")
    rng = np.random.default_rng(0)
    paths = []
    for h, w in [(64, 64), (37, 91), (200, 150), (480, 640), (1, 1), (63, 65)]:
        y, x = np.mgrid[0:h, 0:w]
        ramp = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), (x + y) % 256], -1)
        img = (rng.integers(0, 256, (h, w, 3)) * 0.5 + ramp * 0.5).astype(np.uint8)
        paths.append(out / f"rgb{h}x{w}.png")
        cv2.imwrite(str(paths[-1]), img)
    paths.append(out / "gray50x70.png")
    cv2.imwrite(str(paths[-1]), rng.integers(0, 256, (50, 70), dtype=np.uint8))
    paths.append(out / "rgba90x33.png")
    cv2.imwrite(str(paths[-1]), rng.integers(0, 256, (90, 33, 4), dtype=np.uint8))
    return paths


@pytest.fixture(scope="session")
def jpeg(tmp_path_factory, pngs):
    import cv2

    path = tmp_path_factory.mktemp("cpp-jpeg") / "photo.jpg"
    cv2.imwrite(str(path), cv2.resize(cv2.imread(str(pngs[3])), (300, 220)), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_bit_check_cpp_passes(cpp_build, tiny_full_bundle, precision):
    done = run(cpp_build, "bit-check-cpp", tiny_full_bundle, "--precision", precision)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("PASS")
    artifact = "model.fp32.onnx" if precision == "fp32" else "model.int8-ort.onnx"
    assert f"({artifact})" in done.stdout


def test_bit_check_cpp_matches_python_bit_check(cpp_build, tiny_full_bundle):
    """The same numbers as bit-check --backend openvino --reference stored (same arithmetic, same runtime)."""
    from bit_trt.engine.bundle import load_bundle
    from bit_trt.engine.compare import measure
    from bit_trt.engine.openvino_runner import OpenVinoRunner
    from bit_trt.engine.parity_raw import read_parity_raw
    from bit_trt.engine.preprocess import scale_uint8

    bundle = load_bundle(str(tiny_full_bundle))
    images, tf_logits = read_parity_raw(bundle)
    with OpenVinoRunner(bundle.artifact_path("fp32")) as runner:
        metrics = measure(runner.infer(scale_uint8(images)), tf_logits)
        rewritten = runner.rewrites.describe()
    done = run(cpp_build, "bit-check-cpp", tiny_full_bundle)
    # the same rewrites as the Python runner's (engine/openvino_graph.py, bit/openvino_graph.hpp)
    assert "with gamma and beta in one multiply-add, 1 zero Pad in its MaxPool" in rewritten, rewritten
    assert f", {rewritten}, " in done.stdout, done.stdout
    assert f"rel L2 {metrics['rel_l2']:.3g} " in done.stdout, done.stdout
    assert f"max abs {metrics['max_abs']:.3g} " in done.stdout, done.stdout


def test_bit_check_cpp_runs_int8_in_bf16_as_the_python_runner_does(cpp_build, tiny_full_bundle):
    """INT8 asked in bf16: the same rewrites (the sums of quantized convolutions from their float outputs among them,
    bit/requantized_sum.hpp), the same arithmetic and so the same agreement with TF as the Python runner's."""
    from bit_trt.engine import backends
    from bit_trt.engine.bundle import load_bundle
    from bit_trt.engine.compare import measure
    from bit_trt.engine.parity_raw import read_parity_raw
    from bit_trt.engine.preprocess import scale_uint8

    bundle = load_bundle(str(tiny_full_bundle))
    images, tf_logits = read_parity_raw(bundle)
    with backends.create(bundle, "openvino", "int8", inference_precision="bf16") as runner:
        metrics = measure(runner.infer(scale_uint8(images)), tf_logits)
        described = runner.describe()
    done = run(cpp_build, "bit-check-cpp", tiny_full_bundle, "--precision", "int8", "--inference-precision", "bf16")
    assert done.returncode == 0 and done.stdout.strip().endswith("PASS"), done.stdout + done.stderr
    assert "without their Q/DQ" in described and "of them through one reader" in described, described
    assert f": {described}, int8 (model.int8-ort.onnx)" in done.stdout.splitlines()[0], (described, done.stdout)
    assert f"rel L2 {metrics['rel_l2']:.3g} " in done.stdout, done.stdout


def _openvino_compiles(model_path, asked: str | None) -> str:
    """What OpenVINO's CPU plugin compiles the file in here: with `asked` as its inference precision, or its own
    choice (None); "bf16" or "f32"."""
    import openvino as ov

    config = {} if asked is None else {"INFERENCE_PRECISION_HINT": asked}
    compiled = ov.Core().compile_model(str(model_path), "CPU", config).get_property("INFERENCE_PRECISION_HINT")
    return "bf16" if compiled.to_string() == "bf16" else "f32"


# The Python runner's choice for the fp16 tier, in a fresh process (OpenVINO reads oneDNN's cap once, at start).
PYTHON_CHOICE = """
import json, openvino as ov
from bit_trt.engine.openvino_runner import fp16_arithmetic
print(json.dumps(fp16_arithmetic(ov.Core())))
"""


@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize("cap", [None, "AVX512_CORE_BF16", "AVX512_CORE_VNNI"])
def test_bit_check_cpp_runs_fp16_in_what_the_python_runner_chooses_gated(cpp_build, tiny_full_bundle, cap, precision):
    """The fp16 variant, and the INT8 variant's float layers, in the arithmetic the Python runner picks on this CPU
    (openvino_runner.fp16_arithmetic: bf16 only where it out-computes f32 as oneDNN dispatches, by
    engine/cpu_table.json), under oneDNN's caps too, for the same reason; held to the manifest's bf16_tolerance when
    bf16. On an AMX Xeon capped at AVX512_CORE_BF16 both run f32 (AVX-512 BF16 computes half f32's FLOPs there),
    where OpenVINO's own default is bf16."""
    if cap and "avx512f" not in this_host().flags:
        pytest.skip("the cap makes an AVX-512 CPU run as an older one: this CPU has no AVX-512")
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    if cap:
        env["ONEDNN_MAX_CPU_ISA"] = cap
    python = subprocess.run([sys.executable, "-c", PYTHON_CHOICE], env=env, capture_output=True, text=True, timeout=300)
    assert python.returncode == 0, python.stderr[-2000:]
    chosen, why = json.loads(python.stdout.splitlines()[-1])
    done = run(cpp_build, "bit-check-cpp", tiny_full_bundle, "--precision", precision, env=env)
    assert done.returncode == 0 and done.stdout.strip().endswith("PASS"), done.stdout + done.stderr
    first = done.stdout.splitlines()[0]
    file, compute = ("model.fp16.onnx", "") if precision == "fp16" else ("model.int8-ort.onnx", "int8, float layers ")
    bound = compare.tolerance_for(precision, "bf16").rel_l2
    if chosen == "bf16":  # INT8 in bf16 also adds its quantized convolutions from their float outputs, written once
        last = "of them through one reader" if precision == "int8" else "MaxPool"
        assert f"{last}, {compute}bf16), {precision} ({file})" in first, first
        assert f"tolerance ({file}'s manifest record, bf16_tolerance): rel L2 <= {bound:g}," in done.stdout
    else:
        runs = "fp16 runs" if precision == "fp16" else "int8's float layers run"
        assert f", {compute}f32; {runs} as f32: {why}), {precision} ({file})" in first, (first, why)


def test_fp16_asked_in_f32_runs_f32(cpp_build, tiny_full_bundle):
    done = run(cpp_build, "bit-check-cpp", tiny_full_bundle, "--precision", "fp16", "--inference-precision", "f32")
    assert done.returncode == 0 and done.stdout.strip().endswith("PASS"), done.stdout + done.stderr
    assert ", f32; fp16 runs as f32: f32 was asked for), fp16 (model.fp16.onnx)" in done.stdout.splitlines()[0]
    assert "tolerance (model.fp16.onnx's manifest record): rel L2 <= 0.02," in done.stdout


def _host_cases():
    from tests.engine import test_cpu_peak as hosts

    texts = {name: value for name, value in vars(hosts).items() if name.isupper() and isinstance(value, str)}
    texts = {name: text for name, text in texts.items() if text.startswith("processor")}
    texts["UNTABLED_INTEL_BF16"] = hosts.cpuinfo("GenuineIntel", 6, 0xD7, "fma avx2 avx512f avx512bw avx512_bf16")
    texts["NO_FIELDS"] = "processor\t: 0\n"
    caps = [{}, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, {"DNNL_MAX_CPU_ISA": "avx512_core_vnni"}]
    caps += [{"ONEDNN_MAX_CPU_ISA": "no such ISA"}, {"ONEDNN_MAX_CPU_ISA": " ", "DNNL_MAX_CPU_ISA": "AVX2"}]
    return [(name, text, cap) for name, text in sorted(texts.items()) for cap in caps]


def test_cpp_decides_bf16_as_python_does_for_every_tabled_host(cpp_build, tmp_path):
    """bit::bf16_pays and engine/cpu_peak.bf16_pays, on the same cpuinfo texts and caps: the same verdict, in the
    same words (both read engine/cpu_table.json)."""
    from bit_trt.engine import cpu_host, cpu_peak

    cases = _host_cases()
    assert len(cases) >= 40
    for name, text, cap in cases:
        path = tmp_path / f"{name}.cpuinfo"
        path.write_text(text)
        env = {k: v for k, v in os.environ.items() if not k.endswith("_MAX_CPU_ISA")}
        done = run(cpp_build, "bit-cpp-probe", "bf16-pays", path, env={**env, **cap})
        assert done.returncode == 0, done.stderr
        pays, why = cpu_peak.bf16_pays(cpu_host.parse(text).under_isa_cap(cap))
        assert done.stdout == f"{'bf16' if pays else 'f32'}\t{why}\n", (name, cap)


def test_a_bundle_without_bf16_tolerance_runs_fp16_in_f32(cpp_build, tiny_full_bundle, copy_bundle):
    bundle = copy_bundle(tiny_full_bundle)
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    fp16 = next(a for a in manifest["artifacts"] if a["file"] == "model.fp16.onnx")
    assert fp16.pop("bf16_tolerance")["rel_l2"] == 0.1
    path.write_text(json.dumps(manifest))
    done = run(cpp_build, "bit-check-cpp", bundle, "--precision", "fp16")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "f32; fp16 runs as f32: model.fp16.onnx records no bf16_tolerance" in done.stdout.splitlines()[0]
    done = run(cpp_build, "bit-check-cpp", bundle, "--precision", "fp16", "--inference-precision", "bf16")
    assert done.returncode == 2
    assert "model.fp16.onnx records no bf16_tolerance, the gate a bf16 run is held to" in one_error_line(
        done, "bit-check-cpp"
    )


def _unmeetable_bf16_gate(bundle, file: str):
    """`bundle` with the record of `file` holding a bf16 bound no run meets."""
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    record = next(a for a in manifest["artifacts"] if a["file"] == file)
    record["bf16_tolerance"]["rel_l2"] = 1e-9
    path.write_text(json.dumps(manifest))
    return bundle


def test_a_bf16_run_that_fails_the_gate_is_refused(cpp_build, tiny_full_bundle, copy_bundle):
    if _openvino_compiles(tiny_full_bundle / "model.fp16.onnx", "bf16") != "bf16":
        pytest.skip("OpenVINO compiles no bf16 on this CPU")
    bundle = _unmeetable_bf16_gate(copy_bundle(tiny_full_bundle), "model.fp16.onnx")
    done = run(cpp_build, "bit-check-cpp", bundle, "--precision", "fp16", "--inference-precision", "bf16")
    assert done.returncode == 2
    line = one_error_line(done, "bit-check-cpp")
    assert "bf16): the fp16 model in bf16 fails the accuracy gate against TF on the bundle's parity set " in line
    assert "(relative L2 " in line
    assert "so it is refused here; use precision fp32 or int8, or inference precision f32" in line


def test_int8_that_misses_its_bf16_gate_runs_its_float_layers_in_f32(cpp_build, tiny_full_bundle, copy_bundle):
    """As the Python runner: INT8's bf16 float layers are a saving, so where they miss the gate they run in f32 (as
    the export gated them), said in the backend line; asked for bf16 outright, INT8 is refused."""
    if _openvino_compiles(tiny_full_bundle / "model.int8-ort.onnx", "bf16") != "bf16":
        pytest.skip("OpenVINO compiles no bf16 on this CPU")
    python = subprocess.run([sys.executable, "-c", PYTHON_CHOICE], capture_output=True, text=True, timeout=300)
    if json.loads(python.stdout.splitlines()[-1])[0] != "bf16":
        pytest.skip("INT8's float layers run f32 on this CPU: no bf16 gate to miss")
    bundle = _unmeetable_bf16_gate(copy_bundle(tiny_full_bundle), "model.int8-ort.onnx")
    done = run(cpp_build, "bit-check-cpp", bundle, "--precision", "int8")
    assert done.returncode == 0 and done.stdout.strip().endswith("PASS"), done.stdout + done.stderr
    first = done.stdout.splitlines()[0]
    assert "int8, float layers f32; int8's float layers run as f32: in bf16 it fails the accuracy gate against TF" in (
        first
    )
    assert "MaxPool, int8, float layers f32" in first  # compiled again without the rewrite that pays only in bf16
    assert "tolerance (model.int8-ort.onnx's manifest record): rel L2 <= 0.5," in done.stdout  # INT8's own check
    done = run(cpp_build, "bit-check-cpp", bundle, "--precision", "int8", "--inference-precision", "bf16")
    assert done.returncode == 2
    assert "so it is refused here; use inference precision f32, or precision fp32" in one_error_line(
        done, "bit-check-cpp"
    )


def test_the_bf16_gate_verdict_is_kept_and_only_this_users_own_is_taken(cpp_build, tiny_full_bundle, tmp_path):
    """As engine/compute_gate.py: the classifier's bf16 gate is kept per user, host and model (0600 in a 0700
    folder) and read on the next start; a kept file that is a link, writable by others or owned by another user is
    measured again, since in a shared cache it could make a failing model pass."""
    python = subprocess.run([sys.executable, "-c", PYTHON_CHOICE], capture_output=True, text=True, timeout=300)
    if json.loads(python.stdout.splitlines()[-1])[0] != "bf16":
        pytest.skip("the fp16 tier runs f32 on this CPU: no bf16 gate to keep")
    cache = tmp_path / "cache"
    env = {**os.environ, "BIT_TRT_CACHE": str(cache)}
    check = ("bit-check-cpp", tiny_full_bundle, "--precision", "fp16")
    assert run(cpp_build, *check, env=env).returncode == 0
    [path] = (cache / "compute-gate").iterdir()
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    kept = json.loads(path.read_text())
    from bit_trt.engine.bundle import load_bundle
    from bit_trt.engine.parity_set import load_parity_set

    images = len(load_parity_set(load_bundle(str(tiny_full_bundle)))[0])
    assert kept["passed"] is True and kept["images"] == images and kept["described"].endswith(", bf16)")
    plant_failure(path)
    done = run(cpp_build, *check, env=env)  # the classifier takes its own kept verdict: refused, in one line
    assert done.returncode == 2 and "(planted), so it is refused here" in one_error_line(done, "bit-check-cpp")
    for mode in (0o620, 0o602):
        plant_failure(path)
        path.chmod(mode)
        assert run(cpp_build, *check, env=env).returncode == 0  # measured again, and kept again
        assert path.stat().st_mode & 0o777 == 0o600 and json.loads(path.read_text())["passed"] is True
    other = path.with_name("another model.json")
    path.rename(other)
    plant_failure(other)
    path.symlink_to(other.name)
    assert run(cpp_build, *check, env=env).returncode == 0 and not path.is_symlink()
    if os.geteuid() == 0:
        plant_failure(path)
        os.chown(path, 65534, 65534)
        assert run(cpp_build, *check, env=env).returncode == 0


def test_bit_classify_cpp_takes_an_inference_precision(cpp_build, tiny_full_bundle, pngs):
    done = run(
        cpp_build, "bit-classify-cpp", tiny_full_bundle, pngs[0], "--precision", "fp16", "--inference-precision", "f32"
    )
    assert done.returncode == 0, done.stderr
    assert "MaxPool, f32; fp16 runs as f32: f32 was asked for), model.fp16.onnx" in done.stderr
    done = run(cpp_build, "bit-classify-cpp", tiny_full_bundle, pngs[0], "--inference-precision", "bf16")
    assert done.returncode == 1
    line = one_error_line(done, "bit-classify-cpp")
    assert "inference precision bf16 applies to the fp16 and int8 variants, whose records hold their gate" in line
    assert line.endswith("(bf16_tolerance); model.fp32.onnx is fp32")


# OpenCV 4.6 (Debian, C++) and 5.0 (the opencv-python-headless wheel): decode, bilinear (the manifests' resize),
# area and nearest give the same uint8 pixels, so the float tensors are equal bit for bit; bicubic is not
# bit-exact across the two versions and differs by at most one uint8 step (1/255) on some pixels.
@pytest.mark.parametrize("resize,steps", [("bilinear", 0), ("area", 0), ("nearest", 0), ("bicubic", 1)])
def test_preprocessing_equals_python(cpp_build, tiny_full_bundle, pngs, jpeg, tmp_path, resize, steps):
    from bit_trt.engine.preprocess import InputSpec, preprocess

    images = [*pngs, jpeg]
    out = tmp_path / "batch.f32"
    done = run(cpp_build, "bit-cpp-probe", "preprocess", tiny_full_bundle, out, "--resize", resize, *images)
    assert done.returncode == 0, done.stderr
    expected = preprocess([str(p) for p in images], InputSpec(resolution=64, resize=resize))
    got = np.fromfile(out, np.float32).reshape(expected.shape)
    worst = float(np.abs(got - expected).max()) * 255
    if steps == 0:
        np.testing.assert_array_equal(got, expected)
    else:
        assert worst <= steps + 1e-4, f"{resize}: {worst:.3f} uint8 steps apart"


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed here")
def test_an_upload_decoded_through_a_file_stays_in_a_private_folder(cpp_build, tiny_full_bundle, tmp_path):
    """As tests/engine/test_opencv_temp.py for Python: OpenCV's temporary file for a Radiance HDR is opened in the
    user's folder (0700, kept), not in /tmp."""
    from tests.engine.test_opencv_temp import hdr_upload, traced, users_folder

    upload = hdr_upload(tmp_path / "upload.hdr")
    done, opened = traced(tmp_path, [str(cpp_build / "bit-classify-cpp"), str(tiny_full_bundle), upload])
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == upload
    assert opened, "OpenCV decoded the HDR without a temporary file: this test no longer sees what it guards"
    assert {os.path.dirname(path) for path in opened} == {users_folder(tmp_path)}, opened
    st = os.lstat(users_folder(tmp_path))
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    assert os.listdir(users_folder(tmp_path)) == []


def test_a_folder_name_another_user_made_first_is_not_used(cpp_build, tiny_full_bundle, tmp_path):
    """A symlink another user planted at bit-trt-opencv-<uid> is not followed: the process makes a folder of its
    own, removed at exit, and the HDR decodes."""
    from tests.engine.test_opencv_temp import hdr_upload, private_env, users_folder

    (tmp_path / "theirs").mkdir(mode=0o777)
    os.symlink(tmp_path / "theirs", users_folder(tmp_path))
    upload = hdr_upload(tmp_path / "upload.hdr")
    done = run(cpp_build, "bit-classify-cpp", tiny_full_bundle, upload, env=private_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == upload
    assert sorted(os.listdir(tmp_path)) == ["bit-trt-opencv-" + str(os.geteuid()), "theirs", "upload.hdr"]
    assert os.listdir(tmp_path / "theirs") == []


def test_without_a_writable_temporary_folder_only_such_uploads_fail_in_one_line(
    cpp_build, tiny_full_bundle, jpeg, tmp_path
):
    """$TMPDIR names no folder, so no private one can be made: the HDR is refused in one line (OpenCV can make its
    file nowhere, /tmp included), and a JPEG still decodes."""
    from tests.engine.test_opencv_temp import hdr_upload

    env = {k: v for k, v in os.environ.items() if k != "OPENCV_TEMP_PATH"}
    env["TMPDIR"] = str(tmp_path / "missing")
    upload = hdr_upload(tmp_path / "upload.hdr")
    done = run(cpp_build, "bit-classify-cpp", tiny_full_bundle, upload, env=env)
    assert f"{upload}: not a decodable image" in one_error_line(done, "bit-classify-cpp")
    done = run(cpp_build, "bit-classify-cpp", tiny_full_bundle, jpeg, env=env)
    assert done.returncode == 0, done.stderr


def test_top1_agrees_with_python_on_a_jpeg(cpp_build, tiny_full_bundle, jpeg):
    from bit_trt.engine import Classifier

    done = run(cpp_build, "bit-classify-cpp", tiny_full_bundle, jpeg)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == str(jpeg) and len(lines) == 6
    with Classifier(str(tiny_full_bundle), backend="openvino") as clf:
        python_top = clf.predict([str(jpeg)]).top(5)[0]
    cpp_top = [line.split("%", 1)[1].strip() for line in lines[1:]]
    assert cpp_top[0] == python_top[0][0]
    assert cpp_top == [name for name, _ in python_top]
    assert lines[1].split("%")[0].strip() == f"{python_top[0][1] * 100:.2f}"


def test_eight_threads_give_the_serial_answers(cpp_build, tiny_full_bundle, pngs, jpeg):
    done = run(cpp_build, "bit-cpp-probe", "threads", tiny_full_bundle, 8, 4, *pngs, jpeg)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"threads 8: {8 * 4 * (len(pngs) + 1)} calls, 0 differ from the serial logits, 0 errors" in done.stdout


def test_static_shape_models_answer_like_the_dynamic_one(cpp_build, tiny_full_bundle, pngs, jpeg):
    """ClassifierOptions::static_shapes, as the Python runner's: a batch size gets a model of its own on its second
    call; its answers match the dynamic model's (a Classifier with static_shapes 0) on every call."""
    images = [*pngs, jpeg]
    done = run(cpp_build, "bit-cpp-probe", "shapes", tiny_full_bundle, *images)
    assert done.returncode == 0, done.stdout + done.stderr
    calls, rest = done.stdout.split("shapes: ", 1)[1].split(" calls, largest relative L2 difference ")
    worst, models = rest.split(", ", 1)
    assert int(calls) == 3 * (1 + len(images)) and float(worst) < 1e-5
    assert models.strip() == "2 static models (dynamic only: 0)"  # batch 1 and batch len(images)


def test_a_model_file_changed_after_construction_is_not_read_again(cpp_build, tiny_full_bundle, copy_bundle, jpeg):
    """A static-shape model reads the file again after construction: the checksum is checked first, so a file
    changed meanwhile is refused, not compiled."""
    bundle = copy_bundle(tiny_full_bundle)
    done = run(cpp_build, "bit-cpp-probe", "changed", bundle, jpeg)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("refused: ") and "model.fp32.onnx does not match its manifest checksum" in done.stdout


def test_corrupt_image_is_one_clear_error(cpp_build, tiny_full_bundle, jpeg, tmp_path):
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(jpeg.read_bytes()[:300])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    for path in (bad, text):
        done = run(cpp_build, "bit-classify-cpp", tiny_full_bundle, path)
        assert done.returncode == 1
        assert f"{path}: not a decodable image" in one_error_line(done, "bit-classify-cpp")
    # a bad image among good ones: the good ones are still answered
    done = run(cpp_build, "bit-classify-cpp", tiny_full_bundle, jpeg, bad)
    assert done.returncode == 1 and done.stdout.startswith(str(jpeg))


def test_tampered_model_is_refused(cpp_build, tiny_full_bundle, copy_bundle, jpeg):
    bundle = copy_bundle(tiny_full_bundle)
    model = bundle / "model.fp32.onnx"
    data = bytearray(model.read_bytes())
    data[1000] ^= 0xFF
    model.write_bytes(bytes(data))
    done = run(cpp_build, "bit-check-cpp", bundle)
    assert done.returncode == 2
    assert "model.fp32.onnx does not match its manifest checksum" in one_error_line(done, "bit-check-cpp")
    done = run(cpp_build, "bit-classify-cpp", bundle, jpeg)
    assert done.returncode == 1
    assert "does not match its manifest checksum" in one_error_line(done, "bit-classify-cpp")


def test_tampered_parity_file_is_refused(cpp_build, tiny_full_bundle, copy_bundle):
    bundle = copy_bundle(tiny_full_bundle)
    raw = bundle / "parity_inputs.raw"
    data = bytearray(raw.read_bytes())
    data[-1] ^= 0x01
    raw.write_bytes(bytes(data))
    done = run(cpp_build, "bit-check-cpp", bundle)
    assert done.returncode == 2
    assert "parity_inputs.raw does not match its manifest checksum" in one_error_line(done, "bit-check-cpp")


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda m: m["input"].pop("resolution"), "missing key 'input.resolution'"),
        (lambda m: m["model"].pop("num_classes"), "missing key 'model.num_classes'"),
        (lambda m: m["reference"]["raw"]["logits"].pop("offset"), "missing key 'reference.raw.logits.offset'"),
        (lambda m: m.pop("reference"), "has no parity_inputs.raw"),
        (lambda m: m.update(format_version=3), "bundle format version 3 is not supported"),
        (lambda m: m.update(format_version=1), "version 1 predates this reader (version 2); upgrade it in place with"),
        (lambda m: m.pop("flavours"), "missing key 'flavours'"),
        (lambda m: m["input"].update(resize="lanczos"), "manifest names resize 'lanczos'"),
    ],
)
def test_manifest_errors_are_one_clear_line(cpp_build, tiny_full_bundle, copy_bundle, edit, message):
    bundle = copy_bundle(tiny_full_bundle)
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    done = run(cpp_build, "bit-check-cpp", bundle)
    assert done.returncode == 2
    assert message in one_error_line(done, "bit-check-cpp")


def test_usage_errors_exit_2(cpp_build, tiny_full_bundle, tmp_path):
    done = run(cpp_build, "bit-check-cpp", tiny_full_bundle, "--precision", "int4")
    line = one_error_line(done, "bit-check-cpp")
    assert done.returncode == 2 and "unknown precision 'int4'; choose fp16, fp32, int8 (or an exact" in line
    done = run(cpp_build, "bit-classify-cpp", tiny_full_bundle, "x.png", "--precision", "int4")
    assert done.returncode == 2 and "unknown precision 'int4'" in one_error_line(done, "bit-classify-cpp")
    done = run(cpp_build, "bit-check-cpp", tiny_full_bundle, "--inference-precision", "fp16")
    assert done.returncode == 2
    assert "OpenVINO inference precision must be f32 or bf16, got 'fp16'" in one_error_line(done, "bit-check-cpp")
    done = run(cpp_build, "bit-check-cpp", tmp_path / "nothing")
    assert done.returncode == 2 and "does not exist" in one_error_line(done, "bit-check-cpp")
    done = run(cpp_build, "bit-check-cpp", tmp_path)
    assert done.returncode == 2 and "not a bit-trt bundle" in one_error_line(done, "bit-check-cpp")


def test_artifact_records_as_cpp_reads_them(cpp_build, tiny_full_bundle):
    """bit::Bundle's view of every record: flavours, tolerances, and the engine fields docs/cpp.md uses."""
    manifest = json.loads((tiny_full_bundle / "manifest.json").read_text())
    done = run(cpp_build, "bit-cpp-probe", "artifacts", tiny_full_bundle)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(manifest["artifacts"])
    for art in manifest["artifacts"]:
        line = next(line for line in lines if f" {art['file']}" in line)
        assert line.startswith(f"{art['kind']} {art['flavour']} ")
        tolerance = art.get("parity", {}).get("tolerance") or art.get("check_tolerance")
        if art["kind"] == "onnx":  # every ONNX variant states the tolerance bit-check holds it to
            assert tolerance is not None, art["file"]
            assert f"rel_l2<={tolerance['rel_l2']:g} " in line
        if art["kind"] == "engine":
            p = art["profile"]
            assert f" {art['library']} {art['library_version']} " in line
            assert line.endswith(f"profile {p['min']}/{p['opt']}/{p['max']}")


def _size_line(data: bytes) -> str:
    """What engine/image_size.py reads, in bit-cpp-probe's `sizes` format."""
    from bit_trt.engine.errors import BitError
    from bit_trt.engine.image_size import encoded_size

    try:
        size = encoded_size(data, "probe")
    except BitError as exc:
        return f"error: {exc}"
    return f"{size.format} {size.width} {size.height} {size.decode_bytes}"


def test_header_sizes_and_messages_equal_python(cpp_build, tmp_path):
    """Every format this OpenCV writes (three sizes, and every truncation of its first 300 bytes), and the crafted
    and refused headers of tests/engine/test_image_size.py: the C++ reader gives Python's size or Python's message."""
    from tests.engine.test_image_size import CRAFTED, FORMATS, KINDS, REFUSED, SIZES, _encode

    cases = [p.values[0] for p in CRAFTED + REFUSED] + list(KINDS)
    for ext in FORMATS:
        for height, width in SIZES:
            data = _encode(ext, height, width)
            if data is not None:
                cases.append(data)
        data = _encode(ext, 37, 53)
        if data is not None:
            cases += [data[:cut] for cut in range(1, min(len(data), 300))]
    files = []
    for i, data in enumerate(cases):
        files.append(tmp_path / f"case{i}")
        files[-1].write_bytes(data)
    done = run(cpp_build, "bit-cpp-probe", "sizes", *files)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(cases)
    mismatched = [
        (i, line, _size_line(data)) for i, (line, data) in enumerate(zip(lines, cases)) if line != _size_line(data)
    ]
    assert not mismatched, mismatched[:5]
    refused = sum(line.startswith("error:") for line in lines)
    assert 100 < refused < len(cases) - 100  # both answers were exercised, many times


def test_bit_classify_cpp_refuses_an_image_bomb_from_its_header(cpp_build, tiny_full_bundle, tmp_path):
    from tools.serve_attack_bench import zero_png

    bomb, small = tmp_path / "bomb.png", tmp_path / "small.png"
    bomb.write_bytes(zero_png(8000))  # 64 megapixels in 8 KB: 192 MB decoded, and its RGB copy
    small.write_bytes(zero_png(64))
    tool = str(cpp_build / "bit-classify-cpp")
    peaks = {}
    for name, image in (("small", small), ("bomb", bomb)):
        proc = subprocess.Popen(
            [tool, tiny_full_bundle, image, "--max-image-pixels", "16000000"],
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        peaks[name] = usage.ru_maxrss * 1024
        stderr = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
        if name == "bomb":
            assert os.waitstatus_to_exitcode(status) == 1
            assert (
                f"bit-classify-cpp: error: {bomb}: a 8000x8000 PNG image (64.0 megapixels) is over the limit of "
                "16.0 megapixels (max_image_pixels, --max-image-pixels)"
            ) in stderr.splitlines()
    print(f"bit-classify-cpp peak RSS: small {peaks['small'] / 2**20:.0f} MiB, bomb {peaks['bomb'] / 2**20:.0f} MiB")
    assert peaks["bomb"] - peaks["small"] < 48 * 2**20  # nothing decoded
    done = run(cpp_build, "bit-classify-cpp", tiny_full_bundle, small, "--max-decode-mb", "0")
    assert done.returncode == 2 and "--max-decode-mb needs a positive integer, got '0'" in done.stderr
    two_k = tmp_path / "2k.png"
    two_k.write_bytes(zero_png(2000))
    done = run(cpp_build, "bit-classify-cpp", tiny_full_bundle, two_k, "--max-decode-mb", "10")
    assert done.returncode == 1
    assert "would take 27 MiB to decode, over this process's decode memory of 10 MiB (--max-decode-mb)" in done.stderr
