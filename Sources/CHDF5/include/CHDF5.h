#ifndef CHDF5_H
#define CHDF5_H
// Placeholder: filled by the HDF5 reader/writer work.
int chdf5_placeholder(void);
#endif
