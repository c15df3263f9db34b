"""bf16 vs fp32 torch.mm (docs/precision.md); ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 switches AMX off."""
import time, torch
torch.set_num_threads(2)
for n in (512, 1024, 2048):
    for dt in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
        torch.mm(a, b)
        best = 1e9
        for _ in range(6):
            t = time.perf_counter(); torch.mm(a, b); best = min(best, time.perf_counter() - t)
        print(n, dt, f"{2*n**3/best/1e9:.0f} GFLOP/s")
# small-batch linear as in decode: (512, 512) x (512,1536)
for dt in (torch.float32, torch.bfloat16):
    x = torch.randn(512, 512, dtype=dt); w = torch.randn(1536, 512, dtype=dt)
    torch.nn.functional.linear(x, w)
    best=1e9
    for _ in range(20):
        t=time.perf_counter(); torch.nn.functional.linear(x, w); best=min(best,time.perf_counter()-t)
    print("linear 512x512x1536", dt, f"{2*512*512*1536/best/1e9:.0f} GFLOP/s")
print(torch.backends.mkldnn.is_available(), torch.__config__.show()[:600])
