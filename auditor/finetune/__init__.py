"""Making model organisms: :mod:`.recipes` builds the papers' datasets, :mod:`.files` validates
a training file and estimates its tokens and cost, :mod:`.export` converts it for open-weight
trainers, :mod:`.jobs` submits, follows and registers fine-tuning jobs."""
