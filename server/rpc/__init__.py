"""Transport: servicers check input, call the store, convert the result."""
