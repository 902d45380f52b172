// NCCL collectives between the GPUs of the ranks of a bootstrap group (MPI or threads), on device buffers.
#pragma once
#include <memory>

#include "comm/collective.h"

namespace uneven {

// Every rank of `bootstrap` calls this together with its GPU: rank 0 makes the NCCL id and broadcasts it
// through `bootstrap`, then all ranks join one NCCL communicator (rank and size as in `bootstrap`). The
// result takes device buffers of `device` (takes_device_buffers()); each call blocks until it finished.
// `bootstrap` is used only during this call. Failures throw Error.
std::unique_ptr<Collective> make_nccl_collective(Collective& bootstrap, int device);

}  // namespace uneven
