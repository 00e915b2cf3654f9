// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title ztbridge registry: users, study anchors, record transfers, per-study grants, audit anchors.
/// @notice The on-chain half of ztbridge's zero-trust PACS bridge. It holds no PHI, no DICOM
/// UID and no plaintext key: record ids are keyed hashes computed off-chain, key capsules are
/// opaque HPKE ciphertexts sealed to one user's public key, and a whole study is anchored by
/// one Merkle root plus the CID of its encrypted manifest, so anchoring costs the same for a
/// 1-image X-ray as for a 5,000-slice CT. Records belong to a study (an opaque keyed-hash
/// study id): a study has one owner, who grants and revokes doctors for the whole study, and
/// the hospital's custodian, which owns a study until its patient registers, hands its records
/// to the patient with an admin-only transfer.
/// @dev Roles come from OpenZeppelin's AccessControl, but the user registry below is the
/// single source of truth: an account has exactly one role, set by `addUser`, and the role
/// bit is removed while the account is suspended. The generic `grantRole`/`revokeRole`/
/// `renounceRole` entry points are disabled so the two views can never drift apart.
contract ZtbridgeRegistry is AccessControl {
    // ------------------------------------------------------------------ roles

    /// @notice Registers, suspends and reinstates users.
    bytes32 public constant ADMIN_ROLE = keccak256("ADMIN_ROLE");
    /// @notice The gateway acting for a registered device: anchors studies and audit batches.
    bytes32 public constant SENDER_ROLE = keccak256("SENDER_ROLE");
    /// @notice Owns records and decides which doctors may read them. The hospital's custodian
    /// account also holds this role: it owns studies whose patient has no account yet.
    bytes32 public constant PATIENT_ROLE = keccak256("PATIENT_ROLE");
    /// @notice May be granted access to a patient's records.
    bytes32 public constant DOCTOR_ROLE = keccak256("DOCTOR_ROLE");
    /// @notice Reads the event stream; holds no write power on this contract.
    bytes32 public constant AUDITOR_ROLE = keccak256("AUDITOR_ROLE");
    /// @notice The registry's interface version; the gateway refuses to write to another one.
    /// Version 1 (no VERSION getter) had per-record grants and no transfer.
    uint256 public constant VERSION = 2;

    // ------------------------------------------------------------------ errors

    /// @notice The caller is not an active ADMIN.
    error NotAdmin(address account);
    /// @notice The caller is not an active SENDER.
    error NotSender(address account);
    /// @notice The account (caller, patient or doctor) is suspended.
    error AccountSuspended(address account);
    /// @notice The account is not registered.
    error UnknownUser(address account);
    /// @notice `addUser` for an account that is already registered (roles never change).
    error UserExists(address account);
    /// @notice The role is not one of the five roles above.
    error InvalidRole(bytes32 role);
    /// @notice The zero address was given where an account is required.
    error ZeroAddress();
    /// @notice A required value (key, record id, root, CID, capsule) is empty or zero.
    error EmptyValue();
    /// @notice `suspendUser` on an account that is already suspended.
    error AlreadySuspended(address account);
    /// @notice `reinstateUser` on an account that is not suspended.
    error NotSuspended(address account);
    /// @notice An admin tried to suspend itself (which would lock the registry if it were the last).
    error CannotSuspendSelf(address account);
    /// @notice The account anchored to is not a PATIENT.
    error NotAPatient(address account);
    /// @notice The account granted to is not a DOCTOR.
    error NotADoctor(address account);
    /// @notice A record with this id is already anchored; records are never overwritten.
    error RecordExists(bytes32 recordId);
    /// @notice No record with this id.
    error UnknownRecord(bytes32 recordId);
    /// @notice No record of this study was ever anchored.
    error UnknownStudy(bytes32 studyId);
    /// @notice The caller does not own the study.
    error NotStudyOwner(bytes32 studyId, address account);
    /// @notice `revoke` for a doctor who holds no active grant on the study.
    error NotGranted(bytes32 studyId, address doctor);
    /// @notice The study belongs to `owner`: a record of it can only go to `owner` (or to the
    /// custodian, pending a transfer).
    error StudyOwnerMismatch(bytes32 studyId, address owner);
    /// @notice `transferRecord` of a record the custodian does not own (`owner` does).
    error NotCustodianRecord(bytes32 recordId, address owner);
    /// @notice `transferRecord` to the custodian itself.
    error TransferToCustodian(address custodian);
    /// @notice No custodian was designated yet (`designateCustodian`).
    error NoCustodian();
    /// @notice The custodian is designated once, for the registry's life.
    error CustodianAlreadySet(address custodian);
    /// @notice The audit batch is empty, reversed, or not contiguous with the last one.
    error InvalidAuditRange(uint64 fromSeq, uint64 toSeq);
    /// @notice An index past the end of a list.
    error IndexOutOfBounds(uint256 index, uint256 length);
    /// @notice Roles are only changed through addUser/suspendUser/reinstateUser.
    error RoleManagedByRegistry();

    // ------------------------------------------------------------------ events

    /// @notice A user was registered with its role and HPKE public key.
    event UserAdded(
        address indexed account, bytes32 indexed role, bytes hpkePublicKey, address indexed admin
    );
    /// @notice A user's HPKE public key was replaced (password-loss recovery, key rotation).
    event UserKeyUpdated(address indexed account, bytes hpkePublicKey, address indexed admin);
    /// @notice A user was suspended: it can do nothing and its access ends.
    event UserSuspended(address indexed account, address indexed admin);
    /// @notice A suspended user was reinstated.
    event UserReinstated(address indexed account, address indexed admin);
    /// @notice A study (or one batch of it) was anchored for a patient.
    event RecordAnchored(
        address indexed patient,
        bytes32 indexed recordId,
        address indexed sender,
        uint256 index,
        bytes32 studyId,
        bytes32 merkleRoot,
        string manifestCid
    );
    /// @notice The admin designated the custodian account (once).
    event CustodianDesignated(address indexed custodian, address indexed admin);
    /// @notice A custodian-owned record was handed to its patient, with a new sealed capsule.
    event RecordTransferred(
        bytes32 indexed recordId,
        bytes32 indexed studyId,
        address indexed patient,
        address from,
        uint256 index,
        address admin
    );
    /// @notice The owning patient granted a doctor access to a whole study.
    event AccessGranted(bytes32 indexed studyId, address indexed patient, address indexed doctor);
    /// @notice The owning patient revoked a doctor's access to a study.
    event AccessRevoked(bytes32 indexed studyId, address indexed patient, address indexed doctor);
    /// @notice A batch of the gateway's hash-chained audit log was anchored.
    event AuditAnchored(
        uint256 indexed index, bytes32 root, uint64 fromSeq, uint64 toSeq, address indexed sender
    );

    // ------------------------------------------------------------------ storage

    /// @dev role == 0 means "not registered". role + suspended share one slot.
    struct User {
        bytes32 role;
        bool suspended;
        bytes hpkePublicKey;
    }

    /// @dev Three fixed slots (id, root, sender+time) plus the CID and the capsule.
    struct Record {
        bytes32 recordId;
        bytes32 merkleRoot;
        address sender;
        uint64 anchoredAt;
        string manifestCid;
        bytes sealedCapsule;
    }

    /// @dev Where a record lives: one slot, owner != 0 means "exists".
    struct RecordRef {
        address owner;
        uint64 index;
    }

    /// @dev active + grantedAt share one slot; the capsule is the study key(s) sealed to the doctor.
    struct Grant {
        bool active;
        uint64 grantedAt;
        bytes sealedCapsule;
    }

    /// @dev root in one slot, the sequence range and time packed in the other.
    struct AuditAnchor {
        bytes32 root;
        uint64 fromSeq;
        uint64 toSeq;
        uint64 anchoredAt;
    }

    mapping(address account => User) private _users;
    mapping(address patient => Record[]) private _records;
    mapping(bytes32 recordId => RecordRef) private _recordRefs;
    mapping(bytes32 recordId => bytes32 studyId) private _recordStudies;
    mapping(bytes32 studyId => address owner) private _studyOwners;
    mapping(bytes32 studyId => mapping(address doctor => Grant)) private _grants;
    AuditAnchor[] private _auditAnchors;
    address private _custodian;

    // ------------------------------------------------------------------ setup

    /// @param initialAdmin the first ADMIN (the hospital's registry administrator).
    /// @param adminHpkePublicKey its HPKE public key (every user has one; see DESIGN.md).
    constructor(address initialAdmin, bytes memory adminHpkePublicKey) {
        _setRoleAdmin(SENDER_ROLE, ADMIN_ROLE);
        _setRoleAdmin(PATIENT_ROLE, ADMIN_ROLE);
        _setRoleAdmin(DOCTOR_ROLE, ADMIN_ROLE);
        _setRoleAdmin(AUDITOR_ROLE, ADMIN_ROLE);
        _setRoleAdmin(ADMIN_ROLE, ADMIN_ROLE);
        _register(initialAdmin, ADMIN_ROLE, adminHpkePublicKey);
    }

    // ------------------------------------------------------------------ modifiers

    /// @dev Suspension is checked first so a suspended account always gets AccountSuspended,
    /// whatever it tries: "a suspended account can do nothing" is one error, not many.
    modifier notSuspended() {
        if (_users[_msgSender()].suspended) revert AccountSuspended(_msgSender());
        _;
    }

    modifier onlyAdmin() {
        address caller = _msgSender();
        if (_users[caller].suspended) revert AccountSuspended(caller);
        if (!hasRole(ADMIN_ROLE, caller)) revert NotAdmin(caller);
        _;
    }

    modifier onlySender() {
        address caller = _msgSender();
        if (_users[caller].suspended) revert AccountSuspended(caller);
        if (!hasRole(SENDER_ROLE, caller)) revert NotSender(caller);
        _;
    }

    // ------------------------------------------------------------------ users

    /// @notice Register `account` with `role` and its HPKE public key. Admin only.
    /// @dev An account has one role for life: a person who is both patient and doctor gets
    /// two accounts, so a grant can never be confused with ownership.
    function addUser(address account, bytes32 role, bytes calldata hpkePublicKey)
        external
        onlyAdmin
    {
        _register(account, role, hpkePublicKey);
    }

    /// @notice Replace a user's HPKE public key (after a lost-password recovery). Admin only.
    /// @dev Capsules already sealed to the old key are untouched; new grants use the new key.
    function updateUserKey(address account, bytes calldata hpkePublicKey) external onlyAdmin {
        User storage u = _knownUser(account);
        if (hpkePublicKey.length == 0) revert EmptyValue();
        u.hpkePublicKey = hpkePublicKey;
        emit UserKeyUpdated(account, hpkePublicKey, _msgSender());
    }

    /// @notice Suspend `account`: it can no longer act, and its access (as owner or as a
    /// granted doctor) ends until it is reinstated. Admin only.
    function suspendUser(address account) external onlyAdmin {
        User storage u = _knownUser(account);
        if (account == _msgSender()) revert CannotSuspendSelf(account);
        if (u.suspended) revert AlreadySuspended(account);
        u.suspended = true;
        _revokeRole(u.role, account);
        emit UserSuspended(account, _msgSender());
    }

    /// @notice Lift a suspension. Grants made before it are active again. Admin only.
    function reinstateUser(address account) external onlyAdmin {
        User storage u = _knownUser(account);
        if (!u.suspended) revert NotSuspended(account);
        u.suspended = false;
        _grantRole(u.role, account);
        emit UserReinstated(account, _msgSender());
    }

    /// @notice A user's role (0 if unregistered), suspension flag and HPKE public key.
    function getUser(address account)
        external
        view
        returns (bytes32 role, bool suspended, bytes memory hpkePublicKey)
    {
        User storage u = _users[account];
        return (u.role, u.suspended, u.hpkePublicKey);
    }

    /// @notice True if `account` is registered with `role` and not suspended.
    function isActive(address account, bytes32 role) public view returns (bool) {
        return role != bytes32(0) && _users[account].role == role && !_users[account].suspended;
    }

    // ------------------------------------------------------------------ records

    /// @notice Anchor one study (or one batch of it) for `patient`. Sender only.
    /// @param patient the owner: the study's owner, or the custodian (a batch sealed before
    /// the study was transferred; the admin transfers it like the others).
    /// @param recordId a keyed hash (HMAC under a gateway secret) of the study identity and
    /// batch number: it names the record without revealing the DICOM UID it came from.
    /// @param studyId a keyed hash of the study identity alone: the same for every batch of
    /// the study, so one grant covers them all. The first record of a study makes `patient`
    /// the study's owner.
    /// @param merkleRoot root over the study manifest's entries (gateway/merkle.py).
    /// @param manifestCid CIDv1 (text form) of the encrypted manifest in IPFS.
    /// @param sealedCapsule the study key(s) and manifest key, HPKE-sealed to `patient`.
    /// @dev One transaction, constant gas whatever the number of instances.
    function anchorRecord(
        address patient,
        bytes32 recordId,
        bytes32 studyId,
        bytes32 merkleRoot,
        string calldata manifestCid,
        bytes calldata sealedCapsule
    ) external onlySender {
        if (
            recordId == bytes32(0) || studyId == bytes32(0) || merkleRoot == bytes32(0)
                || bytes(manifestCid).length == 0 || sealedCapsule.length == 0
        ) revert EmptyValue();
        if (_recordRefs[recordId].owner != address(0)) revert RecordExists(recordId);
        _claimStudy(studyId, patient);
        uint256 index = _push(patient, recordId, merkleRoot, manifestCid, sealedCapsule);
        _recordStudies[recordId] = studyId;
        emit RecordAnchored(
            patient, recordId, _msgSender(), index, studyId, merkleRoot, manifestCid
        );
    }

    /// @dev `patient` must be an active PATIENT; a new study becomes its; a known study takes
    /// records of its owner, or of the custodian (pending a transfer).
    function _claimStudy(bytes32 studyId, address patient) private {
        User storage p = _knownUser(patient);
        if (p.suspended) revert AccountSuspended(patient);
        if (p.role != PATIENT_ROLE) revert NotAPatient(patient);
        address owner = _studyOwners[studyId];
        if (owner == address(0)) {
            _studyOwners[studyId] = patient;
        } else if (owner != patient && patient != _custodian) {
            revert StudyOwnerMismatch(studyId, owner);
        }
    }

    /// @dev Append a fresh record to `patient`'s list and point its id at it.
    function _push(
        address patient,
        bytes32 recordId,
        bytes32 merkleRoot,
        string calldata manifestCid,
        bytes calldata sealedCapsule
    ) private returns (uint256 index) {
        Record[] storage list = _records[patient];
        index = list.length;
        Record storage r = list.push();
        r.recordId = recordId;
        r.merkleRoot = merkleRoot;
        r.sender = _msgSender();
        r.anchoredAt = uint64(block.timestamp);
        r.manifestCid = manifestCid;
        r.sealedCapsule = sealedCapsule;
        _recordRefs[recordId] = RecordRef({owner: patient, index: uint64(index)});
    }

    // ------------------------------------------------------------------ transfers

    /// @notice Name the hospital's custodian account: the PATIENT-role account that owns
    /// studies whose patient has no account yet. Admin only, once for the registry's life, so
    /// an admin can never re-designate a real patient and take its records.
    function designateCustodian(address account) external onlyAdmin {
        if (_custodian != address(0)) revert CustodianAlreadySet(_custodian);
        User storage u = _knownUser(account);
        if (u.role != PATIENT_ROLE) revert NotAPatient(account);
        if (u.suspended) revert AccountSuspended(account);
        _custodian = account;
        emit CustodianDesignated(account, _msgSender());
    }

    /// @notice The custodian account (0 until designated).
    function custodian() external view returns (address) {
        return _custodian;
    }

    /// @notice Hand a custodian-owned record to `patient`, with the capsule re-sealed to the
    /// patient's key. Admin only; one event per record. The record's study becomes the
    /// patient's (its grants are the patient's to give from then on, and later batches are
    /// anchored to the patient directly).
    /// @dev Only custodian-owned records move: an admin can never take a record from a
    /// patient. The record keeps its id, root, CID, sender and time; the custodian's list is
    /// compacted (the last record takes the freed index), so no loop and no hole.
    function transferRecord(bytes32 recordId, address patient, bytes calldata sealedCapsule)
        external
        onlyAdmin
    {
        (address from, bytes32 studyId) = _checkTransfer(recordId, patient);
        if (sealedCapsule.length == 0) revert EmptyValue();
        _studyOwners[studyId] = patient;
        uint256 index = _move(from, recordId, patient, sealedCapsule);
        emit RecordTransferred(recordId, studyId, patient, from, index, _msgSender());
    }

    /// @dev Record known and the custodian's; `patient` an active PATIENT other than the
    /// custodian; the study the custodian's or already the patient's.
    function _checkTransfer(bytes32 recordId, address patient)
        private
        view
        returns (address from, bytes32 studyId)
    {
        from = _custodian;
        if (from == address(0)) revert NoCustodian();
        address owner = _recordRefs[recordId].owner;
        if (owner == address(0)) revert UnknownRecord(recordId);
        if (owner != from) revert NotCustodianRecord(recordId, owner);
        if (patient == from) revert TransferToCustodian(from);
        User storage p = _knownUser(patient);
        if (p.role != PATIENT_ROLE) revert NotAPatient(patient);
        if (p.suspended) revert AccountSuspended(patient);
        studyId = _recordStudies[recordId];
        address studyOwner_ = _studyOwners[studyId];
        if (studyOwner_ != from && studyOwner_ != patient) {
            revert StudyOwnerMismatch(studyId, studyOwner_);
        }
    }

    /// @dev Copy the record to `patient`'s list with the new capsule, then compact `from`'s
    /// list (its last record takes the freed index).
    function _move(address from, bytes32 recordId, address patient, bytes calldata sealedCapsule)
        private
        returns (uint256 index)
    {
        uint64 slot = _recordRefs[recordId].index;
        Record[] storage src = _records[from];
        Record storage old = src[slot];
        Record[] storage dst = _records[patient];
        index = dst.length;
        Record storage r = dst.push();
        r.recordId = recordId;
        r.merkleRoot = old.merkleRoot;
        r.sender = old.sender;
        r.anchoredAt = old.anchoredAt;
        r.manifestCid = old.manifestCid;
        r.sealedCapsule = sealedCapsule;
        uint256 last = src.length - 1;
        if (slot != last) {
            src[slot] = src[last];
            _recordRefs[src[slot].recordId].index = slot;
        }
        src.pop();
        _recordRefs[recordId] = RecordRef({owner: patient, index: uint64(index)});
    }

    /// @notice How many records `patient` owns (the paper's Get, part one).
    function recordCount(address patient) external view returns (uint256) {
        return _records[patient].length;
    }

    /// @notice Record `index` of `patient` (the paper's Get, part two).
    function getRecord(address patient, uint256 index)
        external
        view
        returns (
            bytes32 recordId,
            bytes32 merkleRoot,
            string memory manifestCid,
            bytes memory sealedCapsule,
            address sender,
            uint64 anchoredAt
        )
    {
        Record[] storage list = _records[patient];
        if (index >= list.length) revert IndexOutOfBounds(index, list.length);
        Record storage r = list[index];
        return (r.recordId, r.merkleRoot, r.manifestCid, r.sealedCapsule, r.sender, r.anchoredAt);
    }

    /// @notice Owner and position of a record, so `getRecord` can fetch it by id.
    function recordById(bytes32 recordId) external view returns (address owner, uint256 index) {
        RecordRef storage ref = _recordRefs[recordId];
        if (ref.owner == address(0)) revert UnknownRecord(recordId);
        return (ref.owner, ref.index);
    }

    /// @notice The study a record belongs to.
    function recordStudy(bytes32 recordId) external view returns (bytes32) {
        if (_recordRefs[recordId].owner == address(0)) revert UnknownRecord(recordId);
        return _recordStudies[recordId];
    }

    /// @notice The owner of a study (0 if no record of it was anchored).
    function studyOwner(bytes32 studyId) external view returns (address) {
        return _studyOwners[studyId];
    }

    // ------------------------------------------------------------------ grants

    /// @notice Give `doctor` access to every record of `studyId`, those anchored later
    /// included, with the study key(s) sealed to the doctor's HPKE key. The study's owner
    /// only; granting again replaces the capsule (key rotation, a batch added since).
    function grant(bytes32 studyId, address doctor, bytes calldata sealedCapsule)
        external
        notSuspended
    {
        address owner = _studyOwnedByCaller(studyId);
        User storage d = _knownUser(doctor);
        if (d.role != DOCTOR_ROLE) revert NotADoctor(doctor);
        if (d.suspended) revert AccountSuspended(doctor);
        if (sealedCapsule.length == 0) revert EmptyValue();
        Grant storage g = _grants[studyId][doctor];
        g.active = true;
        g.grantedAt = uint64(block.timestamp);
        g.sealedCapsule = sealedCapsule;
        emit AccessGranted(studyId, owner, doctor);
    }

    /// @notice Withdraw `doctor`'s access to `studyId`. The study's owner only.
    /// @dev The gateway stops serving the study to the doctor. A key the doctor already
    /// unwrapped cannot be taken back by any ledger; only future access is controlled.
    function revoke(bytes32 studyId, address doctor) external notSuspended {
        address owner = _studyOwnedByCaller(studyId);
        if (!_grants[studyId][doctor].active) revert NotGranted(studyId, doctor);
        delete _grants[studyId][doctor];
        emit AccessRevoked(studyId, owner, doctor);
    }

    /// @notice A doctor's grant on a study: whether it is in force and the sealed capsule.
    function getGrant(bytes32 studyId, address doctor)
        external
        view
        returns (bool active, uint64 grantedAt, bytes memory sealedCapsule)
    {
        Grant storage g = _grants[studyId][doctor];
        return (g.active, g.grantedAt, g.sealedCapsule);
    }

    /// @notice May `account` read `recordId`? True for the active owner of the record or of
    /// its study, and for an active DOCTOR holding an unrevoked grant on its study. False for
    /// unknown records and for anyone suspended.
    /// @dev A patient's suspension does not cut off the doctors it granted (their care
    /// continues); a doctor's suspension cuts off that doctor everywhere.
    function hasAccess(bytes32 recordId, address account) external view returns (bool) {
        address owner = _recordRefs[recordId].owner;
        if (owner == address(0)) return false;
        return _studyAccess(_recordStudies[recordId], owner, account);
    }

    /// @notice May `account` read the records of `studyId` (same rule as `hasAccess`)?
    function hasStudyAccess(bytes32 studyId, address account) external view returns (bool) {
        address owner = _studyOwners[studyId];
        if (owner == address(0)) return false;
        return _studyAccess(studyId, owner, account);
    }

    // ------------------------------------------------------------------ audit

    /// @notice Anchor the root of audit-log entries `fromSeq..toSeq` (inclusive). Sender only.
    /// @dev Batches must tile the log with no gap and no overlap: the first starts at 1 (the
    /// gateway's first sequence number) and each next one at the previous `toSeq + 1`. A
    /// missing or repeated range is refused here, so a cut in the anchored history is
    /// impossible rather than merely detectable.
    function anchorAudit(bytes32 root, uint64 fromSeq, uint64 toSeq) external onlySender {
        if (root == bytes32(0)) revert EmptyValue();
        if (fromSeq > toSeq || fromSeq != lastAuditSeq() + 1) {
            revert InvalidAuditRange(fromSeq, toSeq);
        }
        uint256 index = _auditAnchors.length;
        _auditAnchors.push(
            AuditAnchor({
                root: root,
                fromSeq: fromSeq,
                toSeq: toSeq,
                anchoredAt: uint64(block.timestamp)
            })
        );
        emit AuditAnchored(index, root, fromSeq, toSeq, _msgSender());
    }

    /// @notice The last audit sequence number anchored (0 before the first batch).
    function lastAuditSeq() public view returns (uint64) {
        uint256 n = _auditAnchors.length;
        return n == 0 ? 0 : _auditAnchors[n - 1].toSeq;
    }

    /// @notice Number of audit batches anchored.
    function auditAnchorCount() external view returns (uint256) {
        return _auditAnchors.length;
    }

    /// @notice Audit batch `index`.
    function getAuditAnchor(uint256 index)
        external
        view
        returns (bytes32 root, uint64 fromSeq, uint64 toSeq, uint64 anchoredAt)
    {
        if (index >= _auditAnchors.length) revert IndexOutOfBounds(index, _auditAnchors.length);
        AuditAnchor storage a = _auditAnchors[index];
        return (a.root, a.fromSeq, a.toSeq, a.anchoredAt);
    }

    // ------------------------------------------------------------------ AccessControl

    /// @dev Disabled: a role granted here would bypass the registry (no key, no suspension).
    function grantRole(bytes32, address) public pure override {
        revert RoleManagedByRegistry();
    }

    /// @dev Disabled: use suspendUser, which records why the account stopped.
    function revokeRole(bytes32, address) public pure override {
        revert RoleManagedByRegistry();
    }

    /// @dev Disabled: an account leaves through an admin's suspendUser, never silently.
    function renounceRole(bytes32, address) public pure override {
        revert RoleManagedByRegistry();
    }

    // ------------------------------------------------------------------ internals

    function _register(address account, bytes32 role, bytes memory hpkePublicKey) private {
        if (account == address(0)) revert ZeroAddress();
        if (
            role != ADMIN_ROLE && role != SENDER_ROLE && role != PATIENT_ROLE
                && role != DOCTOR_ROLE && role != AUDITOR_ROLE
        ) revert InvalidRole(role);
        if (hpkePublicKey.length == 0) revert EmptyValue();
        User storage u = _users[account];
        if (u.role != bytes32(0)) revert UserExists(account);
        u.role = role;
        u.hpkePublicKey = hpkePublicKey;
        _grantRole(role, account);
        emit UserAdded(account, role, hpkePublicKey, _msgSender());
    }

    function _knownUser(address account) private view returns (User storage u) {
        u = _users[account];
        if (u.role == bytes32(0)) revert UnknownUser(account);
    }

    /// @dev Unknown study first (a clearer error than "not owner" for a typo'd id).
    function _studyOwnedByCaller(bytes32 studyId) private view returns (address owner) {
        owner = _studyOwners[studyId];
        if (owner == address(0)) revert UnknownStudy(studyId);
        if (owner != _msgSender()) revert NotStudyOwner(studyId, _msgSender());
    }

    /// @dev `recordOwner` is the record's owner (the study's own owner when asked per study).
    function _studyAccess(bytes32 studyId, address recordOwner, address account)
        private
        view
        returns (bool)
    {
        if (account == recordOwner || account == _studyOwners[studyId]) {
            return !_users[account].suspended;
        }
        return _grants[studyId][account].active && isActive(account, DOCTOR_ROLE);
    }
}
