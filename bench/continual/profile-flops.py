#!/usr/bin/env python3
# Kernel time and matrix-product FLOP rate by op type, from the onnxruntime profiles that
# `bench/continual/deep-profile.ts --ort-profile` leaves in tmp/deep-profile/ (one file per
# session; sessions run fewer than twice, and those under 100 ms a run, are skipped). A Conv whose
# weight is [C·K, 1, k, k] with more outputs than inputs is counted as the one-hot im2col of a weight
# gradient: its FLOPs are multiplications by 0 and 1, so its rate says how far it is from a copy.
#
#   python3 bench/continual/profile-flops.py [dir]
import json,sys,glob,collections,math,statistics
def prod(a):
    r=1
    for x in a: r*=x
    return r
def shp(lst):
    return [list(d.values())[0] for d in lst]
for f in sorted(glob.glob((sys.argv[1] if len(sys.argv) > 1 else 'tmp/deep-profile') + '/*.json')):
    ev=json.load(open(f))
    runs=[e for e in ev if e.get('cat')=='Session' and e['name']=='model_run']
    if len(runs)<2: continue
    k=[e for e in ev if e.get('cat')=='Node' and e['name'].endswith('_kernel_time')]
    tot=sum(e['dur'] for e in k)/1000/len(runs)
    if tot<100: continue
    agg=collections.defaultdict(lambda:[0.0,0.0,0])
    for e in k:
        op=e['args']['op_name']; a=e['args']
        ins=shp(a.get('input_type_shape',[])); outs=shp(a.get('output_type_shape',[]))
        fl=0
        try:
            if op=='Conv':
                w=ins[1]; fl=2*prod(outs[0])*prod(w[1:])
                if w[1]==1 and len(w)==4 and ins[0][1]!=1 and w[0]>ins[0][1]: op='Conv(onehot im2col)'
            elif op=='ConvTranspose':
                w=ins[1]; fl=2*prod(ins[0])*prod(w[1:])
            elif op in ('Gemm','MatMul','FusedMatMul','FusedGemm'):
                A,B,O=ins[0],ins[1],outs[0]
                bB=prod(B[:-2]) if len(B)>2 else 1
                K=math.sqrt(prod(A)*prod(B)/prod(O)/bB)
                fl=2*prod(O)*K
        except Exception as ex: pass
        agg[op][0]+=e['dur']/1000/len(runs); agg[op][1]+=fl/len(runs); agg[op][2]+=1
    print(f, len(runs), f'kernel ms/run {tot:.1f}')
    for op,(ms,fl,n) in sorted(agg.items(), key=lambda x:-x[1][0])[:12]:
        print(f'  {op:22s} {ms:8.1f} ms  {fl/1e9:7.2f} GFLOP  {fl/1e6/ms if ms else 0:7.1f} GFLOP/s  nodes/run {n/len(runs):.0f}')
