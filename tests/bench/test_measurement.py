"""bench/measurement.py: how bit-bench warms a configuration up and times its windows."""


def test_a_warm_up_sends_three_requests_per_thread_however_short():
    """The second call of a shape is when a runtime may finish its setup (the OpenVINO runner compiles a model
    for that shape then, on one thread), and a third per thread runs what it set up: a warm-up of no time still
    makes them, outside any recorded window."""
    import threading

    from bit_trt.bench.configurations import Configuration
    from bit_trt.bench.measurement import Workload, warm_up

    calls, lock = {}, threading.Lock()

    def request():
        with lock:
            name = threading.current_thread().name  # unique per thread; idents are reused
            calls[name] = calls.get(name, 0) + 1

    workload = Workload(Configuration("ort-cpu", "fp32", 1, 3, "model"), request)
    warm_up(workload, 0.0)
    # two on each of the first pass's threads, then one on each of the second's (each window starts its own threads)
    assert sorted(calls.values()) == [1, 1, 1, 2, 2, 2]
    assert workload.windows == [] and workload.latencies_ms == []


def test_a_warm_up_ends_with_a_request_per_thread_after_the_second_call_set_up():
    """The OpenVINO runner compiles a shape's model on one thread's second call, and the others keep the dynamic
    model meanwhile: `concurrency` requests must run after that call returned, or the new model's first runs (one
    per stream) land in a timed window. Here one thread's second call takes 0.3 s (the compile), the others' none."""
    import threading
    import time

    from bit_trt.bench.configurations import Configuration
    from bit_trt.bench.measurement import Workload, warm_up

    lock, calls, started, set_up = threading.Lock(), {}, {}, []

    def request():
        name = threading.current_thread().name
        with lock:
            calls[name] = calls.get(name, 0) + 1
            started.setdefault(name, []).append(time.perf_counter())
            compiling = calls[name] == 2 and not set_up
            if compiling:
                set_up.append(None)
        if compiling:
            time.sleep(0.3)
            set_up[0] = time.perf_counter()

    workload = Workload(Configuration("ort-cpu", "fp32", 1, 3, "model"), request)
    warm_up(workload, 0.0)
    after = sorted(t for times in started.values() for t in times if t > set_up[0])
    assert len(after) >= 3  # one request per thread once the set-up is in place
