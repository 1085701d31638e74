from __future__ import annotations

from agent.signals.settings import SignalSettings
from agent.signals.starvation import classify, describe_tree, owner_tree, process_label

S = SignalSettings()


def _loader(build, t: float, *, main_cpu: float, worker_cpu: float, **worker_kw):
    job = {"cgroup_path": "/job", "cgroup_cpu_quota_cores": 4.0}
    main = build.proc(4121, gpus=(3,), cpu_user_seconds=main_cpu, **job)
    workers = [build.proc(5000 + i, ppid=4121, gpus=(3,), cpu_user_seconds=worker_cpu, **job, **worker_kw)
               for i in range(4)]
    return build.host(t, main, *workers)


def test_owner_tree_holds_gpu_processes_and_descendants(build) -> None:
    h = build.host(0.0, build.proc(10, gpus=(0,)), build.proc(11, ppid=10), build.proc(12, ppid=11),
                   build.proc(20, gpus=(1,)), build.proc(30))
    assert set(owner_tree(h, 0)) == {10, 11, 12}
    assert set(owner_tree(h, 1)) == {20}


def test_describe_tree_names_the_root_and_counts_workers(build) -> None:
    h = _loader(build, 0.0, main_cpu=0, worker_cpu=0)
    assert describe_tree(owner_tree(h, 3)) == "pid 4121 (python train.py) and 4 workers"
    server = build.proc(9, cmdline="/usr/bin/python3 -m vllm.entrypoints.openai.api_server --port 80")
    assert process_label(server) == "python3 -m vllm.entrypoints.openai.api_server"
    assert process_label(build.proc(9, cmdline="", comm="trainer")) == "trainer"


def test_the_quota_binds_before_a_pinned_thread(build) -> None:
    prev = _loader(build, 10.0, main_cpu=5.0, worker_cpu=10.0, max_thread_cpu_seconds=10.0)
    cur = _loader(build, 12.0, main_cpu=5.4, worker_cpu=11.9, max_thread_cpu_seconds=11.9)
    assert "quota" in (classify(3, prev, cur, S).evidence or "")


def test_whole_quota_used_is_host_starvation_with_quota_evidence(build) -> None:
    prev = _loader(build, 10.0, main_cpu=5.0, worker_cpu=10.0)
    cur = _loader(build, 12.0, main_cpu=5.4, worker_cpu=11.9)  # 0.2 + 4 x 0.95 = 4.0 cores of a 4-CPU quota
    v = classify(3, prev, cur, S)
    assert v.state == "starved_host"
    assert v.evidence == "pid 4121 (python train.py) and 4 workers used their whole 4-CPU quota"
    cur = _loader(build, 12.0, main_cpu=5.4, worker_cpu=11.75)  # 3.7 cores: still >= 0.9 of the quota
    expected = "pid 4121 (python train.py) and 4 workers used 3.7 of their 4-CPU quota"
    assert classify(3, prev, cur, S).evidence == expected


def test_cgroup_usage_counter_is_preferred_over_the_tree_sum(build) -> None:
    # The tree itself used little, but the whole cgroup (other processes too) is at its quota.
    prev = build.host(0.0, build.proc(1, gpus=(0,), cgroup_path="/c", cgroup_cpu_quota_cores=2.0,
                                      cgroup_cpu_usage_seconds=100.0))
    cur = build.host(1.0, build.proc(1, gpus=(0,), cgroup_path="/c", cgroup_cpu_quota_cores=2.0,
                                     cgroup_cpu_usage_seconds=101.95, cpu_user_seconds=0.1))
    assert classify(0, prev, cur, S).state == "starved_host"


def test_pinned_thread_is_host_starvation(build) -> None:
    prev = build.host(0.0, build.proc(7, gpus=(0,), max_thread_cpu_seconds=50.0, cpu_user_seconds=60.0))
    cur = build.host(1.0, build.proc(7, gpus=(0,), max_thread_cpu_seconds=50.97, cpu_user_seconds=61.0))
    v = classify(0, prev, cur, S)
    assert v.state == "starved_host"
    assert v.evidence == "a thread of pid 7 (python train.py) ran at 97 % of one core"


def test_cgroup_throttling_and_all_host_cores(build) -> None:
    prev = build.host(0.0, build.proc(7, gpus=(0,), cgroup_path="/c", cgroup_cpu_throttled_seconds=1.0))
    cur = build.host(1.0, build.proc(7, gpus=(0,), cgroup_path="/c", cgroup_cpu_throttled_seconds=1.3))
    v = classify(0, prev, cur, S)
    assert v.state == "starved_host"
    assert v.evidence == "the cgroup of pid 7 (python train.py) was CPU-throttled 0.30 s per second"
    prev = build.host(0.0, build.proc(7, gpus=(0,), cpu_user_seconds=0.0), cpu_count=4)
    cur = build.host(1.0, build.proc(7, gpus=(0,), cpu_user_seconds=3.9), cpu_count=4)
    v = classify(0, prev, cur, S)
    assert v.state == "starved_host" and "3.9 of 4 host CPUs" in (v.evidence or "")


def test_threads_in_d_state_are_io_starvation(build) -> None:
    prev = build.host(0.0, build.proc(7, gpus=(0,)), build.proc(8, ppid=7, threads_blocked_io=0))
    cur = build.host(1.0, build.proc(7, gpus=(0,)), build.proc(8, ppid=7, threads_blocked_io=3))
    v = classify(0, prev, cur, S)
    assert v.state == "starved_io"
    assert v.evidence == "3 threads of pid 7 (python train.py) and 1 worker in D state (waiting on I/O)"


def test_io_delay_is_io_starvation(build) -> None:
    prev = build.host(0.0, build.proc(7, gpus=(0,), io_delay_seconds=4.0))
    cur = build.host(2.0, build.proc(7, gpus=(0,), io_delay_seconds=5.0))
    assert classify(0, prev, cur, S).state == "starved_io"


def test_host_pressure_counts_only_with_the_trees_own_corroboration(build) -> None:
    psi0 = {"cpu": {"some": 10.0}, "io": {"some": 10.0}}
    psi1 = {"cpu": {"some": 10.5}, "io": {"some": 10.5}}
    before = build.host(0.0, build.proc(7, gpus=(0,), cpu_user_seconds=1.0, io_delay_seconds=3.0),
                        pressure_stall_seconds=psi0)
    # A neighbour's pressure does not blame a tree that sleeps and reads (but never waits on) its files.
    sleeping = build.host(1.0, build.proc(7, gpus=(0,), cpu_user_seconds=1.6, io_delay_seconds=3.0,
                                          io_read_bytes=50_000_000, threads_running=1),
                          pressure_stall_seconds=psi1)
    assert classify(0, before, sleeping, S).state == "starved_other"
    runnable = build.host(1.0, build.proc(7, gpus=(0,), cpu_user_seconds=1.6, threads_running=2),
                          build.proc(8, ppid=7, threads_running=1), pressure_stall_seconds=psi1)
    v = classify(0, before, runnable, S)
    assert v.state == "starved_host"
    assert v.evidence == ("host CPU pressure 50 % while 3 threads of pid 7 (python train.py) and 1 worker "
                          "waited to run")
    waiting = build.host(1.0, build.proc(7, gpus=(0,), cpu_user_seconds=1.05, io_delay_seconds=3.05),
                         pressure_stall_seconds=psi1)
    v = classify(0, before, waiting, S)
    assert v.state == "starved_io" and "host I/O pressure 50 %" in (v.evidence or "")


def test_no_cause_found_is_starved_other(build) -> None:
    prev = build.host(0.0, build.proc(7, gpus=(0,), cpu_user_seconds=1.0))
    cur = build.host(1.0, build.proc(7, gpus=(0,), cpu_user_seconds=1.02))
    v = classify(0, prev, cur, S)
    assert v.state == "starved_other"
    assert v.evidence == "pid 7 (python train.py) used 0.0 CPUs"


def test_missing_host_or_owner_is_starved_other(build) -> None:
    assert classify(0, None, None, S).state == "starved_other"
    assert classify(0, None, build.host(1.0, build.proc(7, gpus=(1,))), S).evidence == \
        "owner process not visible on the host"


def test_a_reused_pid_gives_no_delta(build) -> None:
    prev = build.host(0.0, build.proc(7, gpus=(0,), max_thread_cpu_seconds=0.0, create_time=1.0))
    cur = build.host(1.0, build.proc(7, gpus=(0,), max_thread_cpu_seconds=500.0, create_time=2.0))
    assert classify(0, prev, cur, S).state == "starved_other"


def test_thresholds_are_configurable(build) -> None:
    prev = build.host(0.0, build.proc(7, gpus=(0,), max_thread_cpu_seconds=0.0))
    cur = build.host(1.0, build.proc(7, gpus=(0,), max_thread_cpu_seconds=0.6))
    assert classify(0, prev, cur, S).state == "starved_other"
    assert classify(0, prev, cur, SignalSettings(host_pinned_thread_ratio=0.5)).state == "starved_host"
