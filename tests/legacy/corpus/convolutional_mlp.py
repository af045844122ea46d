"""This tutorial introduces the LeNet5 neural network architecture
using Theano.

(Classic DeepLearningTutorials style: Python 2, Theano 0.7; images are
8x8 here so that the tests stay fast.)

Usage: python convolutional_mlp.py DATASET [N_EPOCHS]
"""
import os
import sys
import time

import numpy

import theano
import theano.tensor as T
from theano.tensor.signal import downsample
from theano.tensor.nnet import conv

from logistic_sgd import LogisticRegression, load_data
from mlp import HiddenLayer


class LeNetConvPoolLayer(object):
    """Pool Layer of a convolutional network """

    def __init__(self, rng, input, filter_shape, image_shape, poolsize=(2, 2)):
        """
        Allocate a LeNetConvPoolLayer with shared variable internal parameters.
        """
        assert image_shape[1] == filter_shape[1]
        self.input = input

        # there are "num input feature maps * filter height * filter width"
        # inputs to each hidden unit
        fan_in = numpy.prod(filter_shape[1:])
        # each unit in the lower layer receives a gradient from:
        # "num output feature maps * filter height * filter width" /
        #   pooling size
        fan_out = (filter_shape[0] * numpy.prod(filter_shape[2:]) /
                   numpy.prod(poolsize))
        # initialize weights with random weights
        W_bound = numpy.sqrt(6. / (fan_in + fan_out))
        self.W = theano.shared(
            numpy.asarray(
                rng.uniform(low=-W_bound, high=W_bound, size=filter_shape),
                dtype=theano.config.floatX
            ),
            borrow=True
        )

        b_values = numpy.zeros((filter_shape[0],), dtype=theano.config.floatX)
        self.b = theano.shared(value=b_values, borrow=True)

        # convolve input feature maps with filters
        conv_out = conv.conv2d(
            input=input,
            filters=self.W,
            filter_shape=filter_shape,
            image_shape=image_shape
        )

        # downsample each feature map individually, using maxpooling
        # (Theano 0.7's default: ignore_border=False keeps the partial edge)
        pooled_out = downsample.max_pool_2d(
            input=conv_out,
            ds=poolsize
        )

        self.output = T.tanh(pooled_out + self.b.dimshuffle('x', 0, 'x', 'x'))

        self.params = [self.W, self.b]

        self.input = input


def evaluate_lenet5(learning_rate=0.2, n_epochs=200,
                    dataset='mnist.pkl.gz',
                    nkerns=[6, 12], batch_size=20):
    rng = numpy.random.RandomState(23455)

    datasets = load_data(dataset)

    train_set_x, train_set_y = datasets[0]
    valid_set_x, valid_set_y = datasets[1]

    n_train_batches = train_set_x.get_value(borrow=True).shape[0]
    n_valid_batches = valid_set_x.get_value(borrow=True).shape[0]
    n_train_batches /= batch_size
    n_valid_batches /= batch_size

    index = T.lscalar()

    x = T.matrix('x')
    y = T.ivector('y')

    print '... building the model'

    # Reshape matrix of rasterized images of shape (batch_size, 8 * 8)
    # to a 4D tensor, compatible with our LeNetConvPoolLayer
    layer0_input = x.reshape((batch_size, 1, 8, 8))

    # Construct the first convolutional pooling layer:
    # filtering reduces the image size to (8-2+1 , 8-2+1) = (7, 7)
    # maxpooling (ignore_border=False) reduces this to (4, 4)
    layer0 = LeNetConvPoolLayer(
        rng,
        input=layer0_input,
        image_shape=(batch_size, 1, 8, 8),
        filter_shape=(nkerns[0], 1, 2, 2),
        poolsize=(2, 2)
    )

    # filtering reduces the image size to (4-3+1, 4-3+1) = (2, 2)
    # maxpooling reduces this to (1, 1)
    layer1 = LeNetConvPoolLayer(
        rng,
        input=layer0.output,
        image_shape=(batch_size, nkerns[0], 4, 4),
        filter_shape=(nkerns[1], nkerns[0], 3, 3),
        poolsize=(2, 2)
    )

    layer2_input = layer1.output.flatten(2)

    layer2 = HiddenLayer(
        rng,
        input=layer2_input,
        n_in=nkerns[1] * 1 * 1,
        n_out=32,
        activation=T.tanh
    )

    layer3 = LogisticRegression(input=layer2.output, n_in=32, n_out=10)

    cost = layer3.negative_log_likelihood(y)

    validate_model = theano.function(
        [index],
        layer3.errors(y),
        givens={
            x: valid_set_x[index * batch_size: (index + 1) * batch_size],
            y: valid_set_y[index * batch_size: (index + 1) * batch_size]
        }
    )

    params = layer3.params + layer2.params + layer1.params + layer0.params

    grads = T.grad(cost, params)

    updates = [
        (param_i, param_i - learning_rate * grad_i)
        for param_i, grad_i in zip(params, grads)
    ]

    train_model = theano.function(
        [index],
        cost,
        updates=updates,
        givens={
            x: train_set_x[index * batch_size: (index + 1) * batch_size],
            y: train_set_y[index * batch_size: (index + 1) * batch_size]
        }
    )

    print '... training'
    validation_losses = [validate_model(i) for i in xrange(n_valid_batches)]
    print 'initial validation error %f %%' % (numpy.mean(validation_losses) * 100.)

    epoch = 0
    while epoch < n_epochs:
        epoch = epoch + 1
        costs = []
        for minibatch_index in xrange(n_train_batches):
            costs.append(train_model(minibatch_index))
        validation_losses = [validate_model(i) for i
                             in xrange(n_valid_batches)]
        this_validation_loss = numpy.mean(validation_losses)
        print('epoch %i, minibatch %i/%i, train cost %f, validation error %f %%' %
              (epoch, n_train_batches, n_train_batches, numpy.mean(costs),
               this_validation_loss * 100.))


if __name__ == '__main__':
    dataset = sys.argv[1] if len(sys.argv) > 1 else 'mnist.pkl.gz'
    n_epochs = int(sys.argv[2]) if len(sys.argv) > 2 else int(os.environ.get('N_EPOCHS', 200))
    evaluate_lenet5(dataset=dataset, n_epochs=n_epochs)
