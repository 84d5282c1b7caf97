// The fleet's device side, browser-safe (no Node-only import): what both entries export as
// `fleet`. The cloud side (PostgreSQL, NATS, workers) is Node-only: the package's
// subpath `refit/fleet` (./cloud-side.ts).
export { FleetDevice, type FleetDeviceOptions, type FleetDeviceState, type DevicePrediction, type DeviceEvent, type DeviceStats, type HealthOptions, type AdapterRef } from './device.ts';
export { UploadFilter, type UploadFilterOptions, type UploadFilterState } from './upload-filter.ts';
export { encodeUpload, decodeUpload, encodedUploadSize } from './upload-codec.ts';
export { HttpCloudLink, registerDevice, type HttpLinkOptions, type HttpRetryOptions } from './link-http.ts';
export { FleetError, type CloudLink, type UploadPayload, type PushedAdapter } from './types.ts';
