"""bench/measurement.py: how bit-bench warms a configuration up and times its windows."""


def test_a_warm_up_sends_each_thread_three_requests_however_short():
    """The second call of a shape is when a runtime may finish its setup (the OpenVINO runner compiles a model
    for that shape then, on one thread), and the third is when every thread has run what it set up: a warm-up of
    no time still makes three on every thread, outside any recorded window."""
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
    assert sorted(calls.values()) == [3, 3, 3] and workload.windows == [] and workload.latencies_ms == []
