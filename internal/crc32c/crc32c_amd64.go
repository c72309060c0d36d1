package crc32c

import "golang.org/x/sys/cpu"

// canFold: fold needs AVX-512 (F for the 512-bit registers, VL for VPTERNLOGD on 128-bit ones)
// and VPCLMULQDQ; SSE4.2 for the CRC32 instruction that finishes.
var canFold = cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512VPCLMULQDQ && cpu.X86.HasPCLMULQDQ && cpu.X86.HasSSE42

// minFold is the shortest input fold takes (its first step reads 256 bytes). Already there it
// beats hash/crc32 (BenchmarkUpdate: 8.4-8.9 against 14.8-15 ns; 12.4-13.6 against 34 ns at 1 KiB).
const minFold = 256

// fold returns raw(crc, p): it folds p, with crc xored into its first 4 bytes, down to a 16-byte
// remainder and returns raw(0, remainder), computed with the SSE4.2 CRC32 instruction. len(p) must
// be a multiple of 16 and at least 256.
//
//go:noescape
func fold(crc uint32, p []byte) uint32
