"""A Theano-era custom GPU op and a CPU op with a C implementation: the migration cannot translate these.

(Not run by the tests: ``symtrain migrate`` must report them with file:line.)
"""
import numpy

import theano
import theano.tensor as T
from theano import gof
from theano.sandbox.cuda import GpuOp, CudaNdarrayType, gpu_from_host, host_from_gpu
from theano.sandbox.cuda.basic_ops import as_cuda_ndarray_variable

theano.config.device = 'gpu0'
theano.config.force_device = True
theano.config.lib.cnmem = 0.8


class GpuDouble(GpuOp):
    """Doubles its input in a hand-written CUDA kernel."""
    __props__ = ()

    def make_node(self, x):
        x = as_cuda_ndarray_variable(x)
        return theano.Apply(self, [x], [x.type()])

    def c_support_code(self):
        return """
        __global__ void k_double(float *x, float *z, int n) {
            int i = blockIdx.x * blockDim.x + threadIdx.x;
            if (i < n) z[i] = 2 * x[i];
        }
        """

    def c_code(self, node, name, inputs, outputs, sub):
        return "/* launch k_double */"


class CDouble(gof.Op):
    """Doubles its input in C."""
    __props__ = ()

    def make_node(self, x):
        x = T.as_tensor_variable(x)
        return gof.Apply(self, [x], [x.type()])

    def c_code(self, node, name, inputs, outputs, sub):
        return "%(z)s = %(x)s;" % dict(z=outputs[0], x=inputs[0])

    def c_code_cache_version(self):
        return (1,)


x = T.fmatrix('x')
y = host_from_gpu(GpuDouble()(gpu_from_host(x)))
z = CDouble()(x)
f = theano.function([x], [y, z])
print f(numpy.ones((2, 2), dtype='float32'))
