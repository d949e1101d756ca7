"""A user's convolution layer: loading it, adapting it to the engine's NHWC protocol, and its contract.

One module per concept, in the order a check uses them (each imports only those before it):

- ``errors``: ``UserFault`` and its kinds (``ImplementationError``, ``UserCodeError``, ``ContractError``), the
  user's innermost frame, and ``describe_exception`` (an exception as the paragraph of an error row);
- ``shapes``: the contract's shapes per layout, the NHWC↔NCHW permutations, messages for a wrong shape;
- ``adapter``: ``UserLayer`` (the user's functions as a ``ConvLayer``), and in-place modification detection;
- ``loader``: ``load_layer`` and ``load_functions`` (a ``.py`` file or an importable module);
- ``contract``: ``exercise``, the contract checks, whose findings are ``convcheck.results.Finding`` values.

Import from the module that defines a name; this package re-exports nothing.
"""
