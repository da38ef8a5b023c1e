"""W8ASpike's group-128 GEMM on Hopper, written in NVIDIA's CuTe DSL (``backend="cutlass"``, extra ``gpu``).

What it computes (the same as the Triton GEMM of :mod:`~sb_kernels.w8aspike.gemm`, on int8 counts):

    out[m, n] = v_th[m] * sum_g scales[g, n] * P[m, n, g] (+ bias[n]),   P[m, n, g] = sum_{k in g} c[m, k] W[n, k]

with ``c`` int8 counts ``[M, K]``, ``W`` int8 weights ``[N, K]`` (both K-major), one float32 scale per
output channel and group of 128 inputs, one float32 ``v_th`` per row. Every ``P`` is an exact integer
(s8 x s8 -> s32 ``wgmma``); only the scaling rounds (float32, then the output dtype).

Why a second kernel. Triton 3.6 runs the group rescale (int32 -> float, times the group's scales, into
the float32 accumulator) in the warps that issue the MMAs, after waiting for them: the tensor cores idle
while the CUDA cores rescale. This kernel is warp-specialized and persistent: one producer warp group
streams A, B and each group's 128 scales into a ring of shared-memory stages (TMA, mbarriers), and two
consumer warp groups each own 64 rows of a 128 x 128 output tile. Each consumer issues a group's MMAs,
waits for them and rescales; while one warp group rescales, the other's MMAs can use the tensor cores
(the promotion DeepGEMM does for FP8 block scales across its math warp groups). Measured, this hides
little of the rescale: it still costs about 30% of the time on the MLP shapes (docs/kernels.md).

Tried and dropped (H200, ``benchmarks/bench_w8aspike_gemm.py``): a second int32 accumulator per warp
group, to rescale one group under the next group's MMAs, made ptxas wait after every ``wgmma`` (the
SASS shows a ``WARPGROUP.DEPBAR`` per instruction); reading ``float(P)`` from the bits of
``P + 0x4B400000`` (two full-rate additions instead of a conversion) was 9-12% slower than the
conversion: the rescale is bound by instruction issue, not by the conversion's rate.

Requirements: an sm_90 GPU, ``nvidia-cutlass-dsl`` (``pip install spikingbrain[gpu]``), groups of 128
inputs, ``N`` a multiple of 128, ``M`` any (rows past ``M`` are loaded as zeros and never stored).
Compiled on first use per ``(N, K, output dtype, bias dtype)``; every ``M`` then reuses it.
"""

from __future__ import annotations

import math

import torch

GROUP = 128  # inputs per weight scale (the release's layout); one K tile of this kernel
TILE_M, TILE_N = 128, 128

try:  # the optional extra: absent on CPU-only installs
    import cuda.bindings.driver as cuda_driver
    import cutlass
    import cutlass.cute as cute
    import cutlass.pipeline as pipeline
    import cutlass.utils as utils
    import cutlass.utils.hopper_helpers as sm90_utils
    from cutlass.cute.runtime import from_dlpack
except ImportError:  # pragma: no cover - exercised where the extra is missing
    cutlass = None


def cutlass_available() -> bool:
    """Whether the CuTe DSL (``nvidia-cutlass-dsl``) imports."""
    return cutlass is not None


def supports(cols: int, width: int, group: int) -> bool:
    """Whether this kernel takes a layer of ``cols`` outputs, ``width`` inputs and weight groups of ``group``."""
    return group == GROUP and width % GROUP == 0 and cols % TILE_N == 0


if cutlass is not None:

    class HopperW8ASpikeGemm:
        """The kernel: ``__call__(a, b, scales, v_th, bias, out, max_active_clusters, stream)`` on cute tensors
        ``a`` int8 ``(M, K, 1)``, ``b`` int8 ``(N, K, 1)``, ``scales`` float32 ``(N, G)`` (N contiguous),
        ``v_th`` float32 ``(M_pad,)`` (``M_pad >= M`` rounded up to 128), ``bias`` ``(N,)`` (read only when
        ``has_bias``), ``out`` ``(M, N, 1)`` N contiguous."""

        def __init__(self, has_bias: bool):
            self.has_bias = has_bias
            self.acc_dtype = cutlass.Int32
            self.atom_layout_mnk = (2, 1, 1)  # two consumer warp groups, 64 rows each
            self.num_mma_warp_groups = 2
            self.threads_per_warp_group = 128
            self.threads_per_cta = (1 + self.num_mma_warp_groups) * self.threads_per_warp_group
            self.num_mma_threads = self.num_mma_warp_groups * self.threads_per_warp_group
            self.load_warp_id = 0
            self.epi_store_warp_id = 4  # the first warp of the first consumer warp group
            self.load_registers = 40
            self.mma_registers = 232
            self.epi_stage = 4
            self.buffer_align_bytes = 1024
            self.smem_capacity = utils.get_smem_capacity_in_bytes("sm_90")
            self.epilogue_barrier = pipeline.NamedBarrier(barrier_id=1, num_threads=self.num_mma_threads)

        def _setup(self):
            self.tiled_mma = sm90_utils.make_trivial_tiled_mma(
                self.a_dtype, self.b_dtype, self.a_layout.sm90_mma_major_mode(), self.b_layout.sm90_mma_major_mode(),
                self.acc_dtype, self.atom_layout_mnk, tiler_mn=(64, TILE_N),
            )
            self.epi_tile = (TILE_M, 32)
            a_bytes = TILE_M * GROUP
            b_bytes = TILE_N * GROUP
            s_bytes = TILE_N * 4
            epi_bytes = TILE_M * 32 * self.c_dtype.width // 8 * self.epi_stage
            self.ab_stage = (self.smem_capacity - epi_bytes - 2048) // (a_bytes + b_bytes + s_bytes + 64)
            self.ab_stage = min(self.ab_stage, 8)

            def staged(shape_mk, dtype, layout, major_size):
                atom = cute.nvgpu.warpgroup.make_smem_layout_atom(
                    sm90_utils.get_smem_layout_atom(layout, dtype, major_size), dtype
                )
                return cute.tile_to_shape(atom, cute.append(shape_mk, self.ab_stage), order=(0, 1, 2))

            self.a_smem_staged = staged((TILE_M, GROUP), self.a_dtype, self.a_layout, GROUP)
            self.b_smem_staged = staged((TILE_N, GROUP), self.b_dtype, self.b_layout, GROUP)
            self.s_smem_staged = cute.make_layout((TILE_N, 1, self.ab_stage), stride=(1, TILE_N, TILE_N))
            c_atom = cute.nvgpu.warpgroup.make_smem_layout_atom(
                sm90_utils.get_smem_layout_atom(self.c_layout, self.c_dtype, self.epi_tile[1]), self.c_dtype
            )
            self.epi_smem_staged = cute.tile_to_shape(c_atom, cute.append(self.epi_tile, self.epi_stage), order=(0, 1, 2))

        @cute.jit
        def __call__(self, a, b, scales, v_th, bias, out, max_active_clusters: cutlass.Constexpr, stream):
            self.a_dtype, self.b_dtype, self.c_dtype = a.element_type, b.element_type, out.element_type
            self.a_layout = utils.LayoutEnum.from_tensor(a)
            self.b_layout = utils.LayoutEnum.from_tensor(b)
            self.c_layout = utils.LayoutEnum.from_tensor(out)
            self._setup()

            load = cute.nvgpu.cpasync.CopyBulkTensorTileG2SOp()
            tma_a, mA = cute.nvgpu.cpasync.make_tiled_tma_atom(
                load, a, cute.slice_(self.a_smem_staged, (None, None, 0)), (TILE_M, GROUP))
            tma_b, mB = cute.nvgpu.cpasync.make_tiled_tma_atom(
                load, b, cute.slice_(self.b_smem_staged, (None, None, 0)), (TILE_N, GROUP))
            tma_s, mS = cute.nvgpu.cpasync.make_tiled_tma_atom(
                load, scales, cute.slice_(self.s_smem_staged, (None, None, 0)), (TILE_N, 1))
            tma_d, mD = cute.nvgpu.cpasync.make_tiled_tma_atom(
                cute.nvgpu.cpasync.CopyBulkTensorTileS2GOp(), out,
                cute.slice_(self.epi_smem_staged, (None, None, 0)), self.epi_tile)

            tiles = cute.zipped_divide(out, tiler=(TILE_M, TILE_N))
            sched_params = utils.PersistentTileSchedulerParams(tiles[(0, (None, None, None))].shape, (1, 1, 1), 1, True)
            grid = utils.StaticPersistentTileScheduler.get_grid_shape(sched_params, max_active_clusters)

            @cute.struct
            class SharedStorage:
                barriers: cute.struct.MemRange[cutlass.Int64, self.ab_stage * 2]
                sA: cute.struct.Align[cute.struct.MemRange[self.a_dtype, cute.cosize(self.a_smem_staged)], self.buffer_align_bytes]
                sB: cute.struct.Align[cute.struct.MemRange[self.b_dtype, cute.cosize(self.b_smem_staged)], self.buffer_align_bytes]
                sS: cute.struct.Align[cute.struct.MemRange[cutlass.Float32, cute.cosize(self.s_smem_staged)], 128]
                sD: cute.struct.Align[cute.struct.MemRange[self.c_dtype, cute.cosize(self.epi_smem_staged)], self.buffer_align_bytes]

            self.shared_storage = SharedStorage
            self.kernel(tma_a, mA, tma_b, mB, tma_s, mS, tma_d, mD, v_th, bias, self.tiled_mma, sched_params,
                        self.a_smem_staged, self.b_smem_staged, self.s_smem_staged, self.epi_smem_staged).launch(
                grid=grid, block=[self.threads_per_cta, 1, 1], cluster=(1, 1, 1), min_blocks_per_mp=1, stream=stream)

        @cute.kernel
        def kernel(self, tma_a, mA, tma_b, mB, tma_s, mS, tma_d, mD, v_th, bias, tiled_mma, sched_params,
                   a_smem_staged, b_smem_staged, s_smem_staged, epi_smem_staged):
            # The shared-memory layouts come in as arguments: values made on the host side cannot be used here.
            tidx, _, _ = cute.arch.thread_idx()
            warp_idx = cute.arch.make_warp_uniform(cute.arch.warp_idx())
            if warp_idx == 0:
                cute.nvgpu.cpasync.prefetch_descriptor(tma_a)
                cute.nvgpu.cpasync.prefetch_descriptor(tma_b)
                cute.nvgpu.cpasync.prefetch_descriptor(tma_s)
                cute.nvgpu.cpasync.prefetch_descriptor(tma_d)

            a_stage_layout = cute.slice_(a_smem_staged, (None, None, 0))
            b_stage_layout = cute.slice_(b_smem_staged, (None, None, 0))
            stage_bytes = (cute.size_in_bytes(self.a_dtype, a_stage_layout) + cute.size_in_bytes(self.b_dtype, b_stage_layout)
                           + TILE_N * 4)
            storage = cutlass.utils.SmemAllocator().allocate(self.shared_storage)
            ring = pipeline.PipelineTmaAsync.create(
                barrier_storage=storage.barriers.data_ptr(), num_stages=self.ab_stage,
                producer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread),
                consumer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread, self.num_mma_warp_groups * 4),
                tx_count=stage_bytes, cta_layout_vmnk=cute.make_layout((1, 1, 1, 1)), defer_sync=True,
            )
            pipeline.pipeline_init_arrive(cluster_shape_mn=(1, 1), is_relaxed=True)

            sA = storage.sA.get_tensor(a_smem_staged.outer, swizzle=a_smem_staged.inner)
            sB = storage.sB.get_tensor(b_smem_staged.outer, swizzle=b_smem_staged.inner)
            sS = storage.sS.get_tensor(s_smem_staged)
            sD = storage.sD.get_tensor(epi_smem_staged.outer, swizzle=epi_smem_staged.inner)

            gA = cute.local_tile(mA, (TILE_M, GROUP), (None, None, None))  # (bM, bK, RestM, RestK, L)
            gB = cute.local_tile(mB, (TILE_N, GROUP), (None, None, None))
            gS = cute.local_tile(mS, (TILE_N, 1), (None, None))  # (bN, 1, RestN, G)
            gD = cute.local_tile(mD, (TILE_M, TILE_N), (None, None, None))
            one = cute.make_layout(1)
            tAsA, tAgA = cute.nvgpu.cpasync.tma_partition(tma_a, 0, one, cute.group_modes(sA, 0, 2), cute.group_modes(gA, 0, 2))
            tBsB, tBgB = cute.nvgpu.cpasync.tma_partition(tma_b, 0, one, cute.group_modes(sB, 0, 2), cute.group_modes(gB, 0, 2))
            tSsS, tSgS = cute.nvgpu.cpasync.tma_partition(tma_s, 0, one, cute.group_modes(sS, 0, 2), cute.group_modes(gS, 0, 2))

            warp_group = cute.arch.make_warp_uniform(tidx // self.threads_per_warp_group)
            consumer_layout = cute.make_layout(self.num_mma_warp_groups, stride=self.threads_per_warp_group)
            thr_mma = tiled_mma.get_slice(consumer_layout(warp_group - 1))
            tCrA = tiled_mma.make_fragment_A(thr_mma.partition_A(sA))
            tCrB = tiled_mma.make_fragment_B(thr_mma.partition_B(sB))
            tCgD = thr_mma.partition_C(gD)
            acc_shape = tCgD.shape[:3]
            k_tiles = cute.size(gA, mode=[3])

            pipeline.pipeline_init_wait(cluster_shape_mn=(1, 1))

            if warp_group == 0:
                cute.arch.setmaxregister_decrease(self.load_registers)
            if warp_idx == self.load_warp_id:
                scheduler = utils.StaticPersistentTileScheduler.create(sched_params, cute.arch.block_idx(), cute.arch.grid_dim())
                work = scheduler.initial_work_tile_info()
                state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, self.ab_stage)
                while work.is_valid_tile:
                    m_tile, n_tile, l_tile = work.tile_idx
                    tile_a = tAgA[(None, m_tile, None, l_tile)]
                    tile_b = tBgB[(None, n_tile, None, l_tile)]
                    tile_s = tSgS[(None, n_tile, None)]
                    state.reset_count()
                    for _ in range(k_tiles):
                        ring.producer_acquire(state)
                        barrier = ring.producer_get_barrier(state)
                        cute.copy(tma_a, tile_a[(None, state.count)], tAsA[(None, state.index)], tma_bar_ptr=barrier)
                        cute.copy(tma_b, tile_b[(None, state.count)], tBsB[(None, state.index)], tma_bar_ptr=barrier)
                        cute.copy(tma_s, tile_s[(None, state.count)], tSsS[(None, state.index)], tma_bar_ptr=barrier)
                        ring.producer_commit(state)
                        state.advance()
                    scheduler.advance_to_next_work()
                    work = scheduler.get_current_work()
                ring.producer_tail(state)

            if warp_group > 0:
                cute.arch.setmaxregister_increase(self.mma_registers)
                # Each accumulator element's (m, n) in the tile: which scale, v_th and bias it takes. The
                # operands are partitioned per warp group (thr_mma); coordinates need this thread's slice.
                tCcD = tiled_mma.get_slice(tidx - self.threads_per_warp_group).partition_C(
                    cute.make_identity_tensor((TILE_M, TILE_N)))
                scheduler = utils.StaticPersistentTileScheduler.create(sched_params, cute.arch.block_idx(), cute.arch.grid_dim())
                work = scheduler.initial_work_tile_info()
                stage = pipeline.make_pipeline_state(pipeline.PipelineUserType.Consumer, self.ab_stage)
                k_blocks = cute.size(tCrA, mode=[2])
                result = cute.make_rmem_tensor(acc_shape, cutlass.Float32)
                sums = cute.make_rmem_tensor(acc_shape, cutlass.Int32)

                r2s_atom = sm90_utils.sm90_get_smem_store_op(self.c_layout, elem_ty_d=self.c_dtype, elem_ty_acc=cutlass.Float32)
                stmatrix = cute.make_copy_atom(cute.nvgpu.warp.StMatrix8x8x16bOp(self.c_layout.is_m_major_c(), 4), self.c_dtype)
                r2s = cute.make_tiled_copy_S(r2s_atom, cute.make_tiled_copy_C_atom(stmatrix, tiled_mma))
                thr_r2s = r2s.get_slice(tidx - self.threads_per_warp_group)
                tRS_sD = thr_r2s.partition_D(sD)
                tRS_rAcc = r2s.retile(result)
                rD_shape = cute.shape(thr_r2s.partition_S(sD))[:3]
                tRS_rD = cute.make_rmem_tensor(rD_shape, cutlass.Float32)
                tRS_rD_out = cute.make_rmem_tensor(rD_shape, self.c_dtype)
                size_rD = cute.size(tRS_rD)
                store_ring = pipeline.PipelineTmaStore.create(
                    num_stages=self.epi_stage,
                    producer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread, self.num_mma_threads),
                )

                while work.is_valid_tile:
                    m_tile, n_tile, l_tile = work.tile_idx
                    stage.reset_count()
                    result.fill(0.0)
                    for _ in range(k_tiles):  # one weight group per stage
                        ring.consumer_wait(stage)
                        cute.nvgpu.warpgroup.fence()
                        for kb in cutlass.range_constexpr(k_blocks):
                            tiled_mma.set(cute.nvgpu.warpgroup.Field.ACCUMULATE, kb != 0)  # the group's sum starts at 0
                            coord = (None, None, kb, stage.index)
                            cute.gemm(tiled_mma, sums, tCrA[coord], tCrB[coord], sums)
                        cute.nvgpu.warpgroup.commit_group()
                        cute.nvgpu.warpgroup.wait_group(0)
                        self.rescale(result, sums, sS, stage.index, tCcD)
                        ring.consumer_release(stage)
                        stage.advance()

                    # Epilogue: out = result * v_th[m] (+ bias[n]), through shared memory and a TMA store.
                    for i in cutlass.range_constexpr(cute.size(result)):
                        m = tCcD[i][0]
                        n = tCcD[i][1]
                        value = result[i] * v_th[m_tile * TILE_M + m]
                        if cutlass.const_expr(self.has_bias):
                            value = value + bias[n_tile * TILE_N + n].to(cutlass.Float32)
                        result[i] = value

                    tile_d = cute.zipped_divide(gD[(None, None, m_tile, n_tile, l_tile)], self.epi_tile)
                    bSG_sD, bSG_gD = cute.nvgpu.cpasync.tma_partition(tma_d, 0, one, cute.group_modes(sD, 0, 2), tile_d)
                    epi_tiles = cute.size(tile_d, mode=[1])
                    epi_shape = tile_d.shape[1]
                    epi_order = cute.make_layout(epi_shape, stride=(epi_shape[1], 1))
                    done_before = scheduler.num_tiles_executed * epi_tiles
                    for e in cutlass.range_constexpr(epi_tiles):
                        for v in cutlass.range_constexpr(size_rD):
                            tRS_rD[v] = tRS_rAcc[e * size_rD + v]
                        tRS_rD_out.store(tRS_rD.load().to(self.c_dtype))
                        buffer = (done_before + e) % self.epi_stage
                        cute.copy(r2s, tRS_rD_out, tRS_sD[(None, None, None, buffer)])
                        cute.arch.fence_proxy("async.shared", space="cta")
                        self.epilogue_barrier.arrive_and_wait()
                        if warp_idx == self.epi_store_warp_id:
                            cute.copy(tma_d, bSG_sD[(None, buffer)], bSG_gD[(None, epi_order.get_hier_coord(e))])
                            store_ring.producer_commit()
                            store_ring.producer_acquire()
                        self.epilogue_barrier.arrive_and_wait()

                    scheduler.advance_to_next_work()
                    work = scheduler.get_current_work()
                store_ring.producer_tail()

        # Plain Python, traced inline into the kernel: its loop runs at trace time (a static size).
        def rescale(self, result, sums, sS, index, tCcD):
            """``result += float(P) * scale[n]`` for the finished group, its scales in stage ``index``
            (``P`` is exact: at most 128 * 128 * 128 in magnitude, well inside float32's integers)."""
            for i in range(cute.size(result)):
                result[i] = result[i] + sums[i].to(cutlass.Float32) * sS[(tCcD[i][1], 0, index)]


_KERNELS: dict[tuple, object] = {}  # compiled kernels by (class, N, K, output dtype, bias dtype or None)


def _as_cute(t: torch.Tensor):
    """A cute view of ``t`` (no copy) with every extent and stride dynamic, its stride-1 mode leading."""
    return from_dlpack(t, assumed_align=16).mark_layout_dynamic(leading_dim=t.stride().index(1))


def _mnl(t: torch.Tensor) -> torch.Tensor:
    """``[rows, cols]`` as ``(rows, cols, 1)`` with the batch stride ``rows * cols`` (the DSL's GEMM layout)."""
    return t.unsqueeze(0).permute(1, 2, 0)


def hopper_w8a_gemm(
    counts: torch.Tensor,
    weight: torch.Tensor,
    v_th: torch.Tensor,
    scales_gn: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    *,
    kernel_class: type | None = None,
) -> torch.Tensor:
    """``out = v_th * sum_g scales_gn[g] * P_g (+ bias)`` on an sm_90 GPU (see the module docstring).

    ``counts`` int8 ``[M, K]`` and ``weight`` int8 ``[N, K]`` (contiguous), ``v_th`` float32 ``[M]``,
    ``scales_gn`` float32 ``[G, N]`` contiguous (the layer's ``[N, G]`` scales transposed), ``bias``
    ``[N]`` (bfloat16/float16/float32, added in float32) or None, ``out`` ``[M, N]``
    bfloat16/float16/float32 (written). ``kernel_class``: a subclass of :class:`HopperW8ASpikeGemm` to run
    instead (benchmarks time variants of the rescale this way).
    """
    if cutlass is None:  # pragma: no cover - w8aspike_linear checks first
        raise ImportError("backend='cutlass' needs nvidia-cutlass-dsl: pip install 'spikingbrain[gpu]'")
    rows, width = counts.shape
    cols = weight.shape[0]
    if not supports(cols, width, width // scales_gn.shape[0]):
        raise ValueError(f"the cutlass W8ASpike GEMM needs groups of {GROUP} inputs and N % {TILE_N} == 0, "
                         f"got N={cols}, K={width}, G={scales_gn.shape[0]}")
    if rows == 0:
        return out
    padded = math.ceil(rows / TILE_M) * TILE_M
    if padded != rows:  # the epilogue reads v_th of whole tiles (rows past M are never stored)
        v_th = torch.nn.functional.pad(v_th, (0, padded - rows), value=1.0)
    bias_arg = bias if bias is not None else torch.empty(cols, dtype=torch.float32, device=out.device)  # not read
    args = (_as_cute(_mnl(counts)), _as_cute(_mnl(weight)), _as_cute(scales_gn.T), _as_cute(v_th), _as_cute(bias_arg),
            _as_cute(_mnl(out)))
    stream = cuda_driver.CUstream(torch.cuda.current_stream(counts.device).cuda_stream)
    kernel_class = kernel_class or HopperW8ASpikeGemm
    key = (kernel_class, cols, width, out.dtype, None if bias is None else bias.dtype)
    if key not in _KERNELS:  # compiled on first use; every M then reuses it (all extents dynamic)
        sms = torch.cuda.get_device_properties(counts.device).multi_processor_count
        _KERNELS[key] = cute.compile(kernel_class(bias is not None), *args, sms, stream)
    _KERNELS[key](*args, stream)
    return out
