"""`cestab bench`, split the way torch.utils.benchmark is: the measurement in the worker
(`measure`: TimingSpec + BenchCase -> Measurement), the roofline (`bandwidth`), the parent
side that drives it (`runner`) and the table with its Compare-style text (`table`)."""
