"""Development surfaces over the product: the in-process DAG runner and the demo driver."""
