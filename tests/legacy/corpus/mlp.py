"""
This tutorial introduces the multilayer perceptron using Theano.

(Classic DeepLearningTutorials style: Python 2, Theano 0.7.)

Usage: python mlp.py DATASET [N_EPOCHS]
"""
__docformat__ = 'restructedtext en'

import os
import sys
import time

import numpy

import theano
import theano.tensor as T

from logistic_sgd import LogisticRegression, load_data


class HiddenLayer(object):
    def __init__(self, rng, input, n_in, n_out, W=None, b=None,
                 activation=T.tanh):
        """
        Typical hidden layer of a MLP: units are fully-connected and have
        sigmoidal activation function.
        """
        self.input = input
        if W is None:
            W_values = numpy.asarray(
                rng.uniform(
                    low=-numpy.sqrt(6. / (n_in + n_out)),
                    high=numpy.sqrt(6. / (n_in + n_out)),
                    size=(n_in, n_out)
                ),
                dtype=theano.config.floatX
            )
            # the sigmoid needs 4x larger weights (Glorot & Bengio): this
            # comparison must keep holding after migration
            if activation == theano.tensor.nnet.sigmoid:
                W_values *= 4

            W = theano.shared(value=W_values, name='W', borrow=True)

        if b is None:
            b_values = numpy.zeros((n_out,), dtype=theano.config.floatX)
            b = theano.shared(value=b_values, name='b', borrow=True)

        self.W = W
        self.b = b
        self.scaled = activation == T.nnet.sigmoid

        lin_output = T.dot(input, self.W) + self.b
        self.output = (
            lin_output if activation is None
            else activation(lin_output)
        )
        self.params = [self.W, self.b]


class MLP(object):
    def __init__(self, rng, input, n_in, n_hidden, n_out):
        self.hiddenLayer = HiddenLayer(
            rng=rng,
            input=input,
            n_in=n_in,
            n_out=n_hidden,
            activation=T.nnet.sigmoid
        )

        self.logRegressionLayer = LogisticRegression(
            input=self.hiddenLayer.output,
            n_in=n_hidden,
            n_out=n_out
        )
        self.L1 = (
            abs(self.hiddenLayer.W).sum()
            + abs(self.logRegressionLayer.W).sum()
        )
        self.L2_sqr = (
            (self.hiddenLayer.W ** 2).sum()
            + (self.logRegressionLayer.W ** 2).sum()
        )
        self.negative_log_likelihood = (
            self.logRegressionLayer.negative_log_likelihood
        )
        self.errors = self.logRegressionLayer.errors
        self.params = self.hiddenLayer.params + self.logRegressionLayer.params
        self.input = input


def test_mlp(learning_rate=0.1, L1_reg=0.00, L2_reg=0.0001, n_epochs=1000,
             dataset='mnist.pkl.gz', batch_size=20, n_hidden=32):
    datasets = load_data(dataset)

    train_set_x, train_set_y = datasets[0]
    valid_set_x, valid_set_y = datasets[1]

    n_train_batches = train_set_x.get_value(borrow=True).shape[0] / batch_size
    n_valid_batches = valid_set_x.get_value(borrow=True).shape[0] / batch_size
    n_in = train_set_x.get_value(borrow=True).shape[1]

    print '... building the model'

    index = T.lscalar()
    x = T.matrix('x')
    y = T.ivector('y')

    rng = numpy.random.RandomState(1234)

    classifier = MLP(rng=rng, input=x, n_in=n_in, n_hidden=n_hidden, n_out=10)
    print 'sigmoid layer scaled: %s' % classifier.hiddenLayer.scaled

    cost = (
        classifier.negative_log_likelihood(y)
        + L1_reg * classifier.L1
        + L2_reg * classifier.L2_sqr
    )

    validate_model = theano.function(
        inputs=[index],
        outputs=classifier.errors(y),
        givens={
            x: valid_set_x[index * batch_size:(index + 1) * batch_size],
            y: valid_set_y[index * batch_size:(index + 1) * batch_size]
        }
    )

    gparams = [T.grad(cost, param) for param in classifier.params]

    # the pairs are walked twice: a list in Python 2, a spent iterator in 3
    param_grads = zip(classifier.params, gparams)
    updates = [
        (param, param - learning_rate * gparam)
        for param, gparam in param_grads
    ]
    grad_norms = [T.sqrt((gparam ** 2).sum()) for param, gparam in param_grads]
    print 'updating %d parameters (%d gradient norms)' % (len(updates), len(grad_norms))

    train_model = theano.function(
        inputs=[index],
        outputs=cost,
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
        costs = [train_model(i) for i in xrange(n_train_batches)]
        validation_losses = [validate_model(i) for i in xrange(n_valid_batches)]
        print('epoch %i, minibatch %i/%i, train cost %f, validation error %f %%' %
              (epoch, n_train_batches, n_train_batches, numpy.mean(costs),
               numpy.mean(validation_losses) * 100.))


if __name__ == '__main__':
    dataset = sys.argv[1] if len(sys.argv) > 1 else 'mnist.pkl.gz'
    n_epochs = int(sys.argv[2]) if len(sys.argv) > 2 else int(os.environ.get('N_EPOCHS', 1000))
    test_mlp(dataset=dataset, n_epochs=n_epochs)
