"""A user's convolution layer: loading it, adapting it to the engine's NHWC protocol, and its contract.

One module per concept, in the order a check uses them (each imports only those before it):

- ``errors``: ``UserFault`` and its kinds (``ImplementationError``, ``UserCodeError``, ``ContractError``), the
  user's innermost frame, and ``describe_exception`` (an exception as the paragraph of an error row);
- ``shapes``: the contract's shapes per layout, the NHWC↔NCHW permutations, messages for a wrong shape;
- ``adapter``: ``UserLayer`` (the user's functions as a ``ConvLayer``), and in-place modification detection;
- ``frameworks``: torch and JAX layers as numpy functions (``framework_call``, the one place hyperparameters
  become framework arguments; ``frameworks.torch`` and ``frameworks.jax``, imported only by the process that runs
  such a layer);
- ``loader``: ``load_layer``, ``load_functions`` (a ``.py`` file or an importable module) and
  ``load_framework_impl`` (a torch or JAX layer, wrapped as any user layer) and ``load_impl`` (either);
- ``contract``: ``exercise``, the contract checks, whose findings are ``convcheck.results.Finding`` values.

Import from the module that defines a name; this package re-exports nothing.
"""
