//go:build !amd64

package crc32c

const (
	canFold = false
	minFold = int(^uint(0) >> 1) // never: canFold is false
)

func fold(crc uint32, p []byte) uint32 { panic("crc32c: fold without AVX-512") }
